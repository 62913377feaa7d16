"""The CyxWiz wire contract: our ``.proto`` files (package ``cyxwiz.protocol``), the
code generated from them by ``python -m protos.generate``, and pure converters.

Import the generated modules by full name (``from protos import job_pb2``) and the
converters from ``protos.convert``; this package imports nothing on its own (it only
turns gRPC's fork handlers off, below).
"""

import os

# gRPC's fork handlers run in every child a gRPC process forks (our servers and workers
# are started with a pre-exec hook, so with fork, not vfork) and can kill the child
# before it execs: seen as a nats-server that "exited" with gRPC's epoll error in its
# log. We never fork without exec, so they are off unless the user set the variable.
# gRPC reads it when it is imported, so the packages that start processes (central,
# node) and the test and benchmark entry points set it first too.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
