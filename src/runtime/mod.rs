//! The Linux backend: namespaces, mounts, processes, cgroups. The only home
//! of `unsafe` (each module that needs it opts in). Knows nothing of the CRI.

pub mod mount;
pub mod namespace;
pub mod pid_holder;
