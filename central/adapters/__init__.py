"""The adapters: gRPC servicers and the REST app (Litestar, with the serving gateway and
the dashboard) that speak the public protocol, the converters and validation between
protobuf and our types, and authentication."""
