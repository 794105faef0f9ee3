//! gRPC services for operators (Admin) and protobuf conversions.
