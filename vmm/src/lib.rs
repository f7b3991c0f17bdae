//! kennel-vmm: a KVM microVM monitor for one pod.
