//! kennel control plane: the MVCC store (SQLite or etcd) and the Kubernetes-compatible API server.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod apiserver;
pub mod store;
