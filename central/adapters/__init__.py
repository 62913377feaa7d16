"""The adapters: gRPC servicers and the REST app that speak the public protocol, the
converters and validation between protobuf and our types, and authentication."""
