//! The node agent: kennel's kubelet. It registers its Node, keeps a Lease, watches the pods bound to
//! it and drives a CRI runtime (kennel-cri) over the CRI socket, one worker per pod, reporting status
//! exactly as kubelet computes it. It holds no runtime internals: the CRI socket is the boundary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admit;
pub mod agent;
pub mod backoff;
pub mod cri;
pub mod env;
pub mod hooks;
pub mod logs;
pub mod node;
pub mod pod;
pub mod probe;
pub mod provisioner;
pub mod server;
pub mod stats;
pub mod stream;
pub mod volume;
