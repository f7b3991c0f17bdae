//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[path = "../../../store/tests/common/etcd.rs"]
pub mod etcd;
pub mod kubectl;
pub mod server;
