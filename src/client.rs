//! Client side of the operator CLI: talks to any node over gRPC.
