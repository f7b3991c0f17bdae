//! kennel-cri: CRI runtime, one microVM per pod sandbox
