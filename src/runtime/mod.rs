//! The Linux backend: the only place that talks to the kernel directly.

pub mod cgroup;
pub mod seccomp;
