//! Leaf syscall wrappers: the only place in the agent with `unsafe` code.
#![allow(unsafe_code)]

pub mod asyncfd;
pub mod ioctl;
pub mod marker;
pub mod spawn;
