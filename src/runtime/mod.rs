//! The Linux backend: the only place that talks to the kernel directly, and
//! the only home of `unsafe` (each module that needs it opts in). Knows
//! nothing of the CRI.

pub mod cgroup;
pub mod mount;
pub mod namespace;
pub mod pid_holder;
