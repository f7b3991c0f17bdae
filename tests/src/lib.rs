//! End-to-end tests across kennel's crates, and the helpers they share: finding the guest kernel,
//! the static guest binaries and kennel's own binaries built by the test command.

pub mod guest;
pub mod procfs;
pub mod registry;
pub mod runc;
