"""Central: takes jobs, places them on nodes, keeps the history.

    lifecycle/  pure job and node rules, scheduling policy, central's folded state
    control/    command shell, scheduler, dispatcher, liveness (the loops that act)
    readmodel/  DuckDB projection, projector, guarded SQL
    adapters/   gRPC and REST servicers, protocol conversion, authentication
    cli/        the ``cyxwiz`` command and ``cyxwiz up``'s process stack
    server.py   the central process composed; client.py the Python client
"""

import os

# before anything here imports gRPC: its fork handlers off (why: protos/__init__.py)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
