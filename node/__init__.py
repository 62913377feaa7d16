import os

# before anything here imports gRPC: its fork handlers off (why: protos/__init__.py)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
