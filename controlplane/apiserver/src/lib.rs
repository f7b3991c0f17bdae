//! The Kubernetes-compatible API server: discovery, OpenAPI, generic CRUD/watch handlers over the
//! resource registry, Table output, patches, TLS and bearer-token authentication.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod auth;
pub mod convert;
pub mod crd;
pub mod defaults;
pub mod discovery;
pub mod events_ttl;
pub mod handlers;
pub mod openapi_pb;
pub mod pki;
pub mod protobuf;
pub mod protobuf_schema;
pub mod registry;
pub mod request;
pub mod selectors;
pub mod server;
pub mod services;
pub mod start;
pub mod status;
pub mod strategic;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validate;

pub use handlers::ApiState;
pub use server::{bootstrap, router, serve};
pub use start::{start, ApiServerConfig, ApiServerError, RunningApiServer, StoreConfig};
