//! kennel's scheduler: upstream kube-scheduler's default plugins on a small framework, a
//! scheduling queue (active / backoff / unschedulable), a cache with assumed pods, asynchronous
//! binding through `pods/{name}/binding`, upstream's unschedulable reporting, leader election on
//! the `kube-system/kube-scheduler` Lease, and [`sim`]: simulated nodes for scale tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod framework;
pub mod message;
pub mod nodeinfo;
pub mod plugins;
pub mod queue;
pub mod report;
pub mod resources;
pub mod scheduler;
pub mod selector;
pub mod volume_events;
pub mod volumes;

pub use scheduler::{run, SchedulerConfig, SchedulerError};
pub mod sim;
