//! gRPC protocol between the host and kennel-agent
