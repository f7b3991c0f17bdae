//! kennel-cri: a CRI runtime giving every pod sandbox its own microVM.
//!
//! [`server`] serves `runtime.v1` RuntimeService and ImageService on a Unix socket; the
//! runtime ([`runtime::Runtime`]) keeps sandboxes and containers in [`state`], starts one
//! `kennel-vmm` per sandbox ([`vm`], [`sandbox`]) and drives the kennel-agent inside it
//! ([`container`]); [`oci`] turns CRI container configs into OCI specs; [`volumes`] turns CRI mounts into copied
//! volumes and emptyDirs inside the guest; [`logs`] writes
//! CRI-format log files; [`image_service`] serves images from the `images` store; [`uds`] and
//! [`authority`] let clients that send any HTTP/2 `:authority` on the socket in; [`streaming`]
//! serves the URLs of `Exec`/`Attach`/`PortForward` (with [`fanout`] sharing container output
//! between the log file and attach sessions).
#![forbid(unsafe_code)]

pub mod authority;
pub mod container;
pub mod convert;
pub mod fanout;
pub mod hostname;
pub mod image_service;
pub mod logs;
pub mod oci;
pub mod pvdisk;
pub mod registries;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod state;
pub mod stop;
pub mod streaming;
pub mod uds;
pub mod vm;
pub mod volume_disks;
pub mod volumes;
