//! kennel-vmm: a KVM microVM monitor for one pod.
//!
//! The VM is described by [`config::VmConfig`]; [`vm::Vm::boot`] builds it in a documented
//! order and runs one thread per vCPU. Unsafe code is confined to the KVM leaf modules
//! (`memory`, `vcpu`).

pub mod api;
pub mod boot;
pub mod bus;
pub mod config;
pub mod cpuid;
pub mod devices;
pub mod layout;
pub mod memory;
pub mod mptable;
pub mod profile;
pub mod regs;
pub mod seccomp;
pub mod snapshot;
pub mod vcpu;
pub mod virtio;
pub mod vm;
