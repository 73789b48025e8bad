//! The Linux backend: the only place that talks to the kernel directly
//! (namespaces, mounts, `pivot_root`, credentials, capabilities, exec,
//! cgroups), and the only home of `unsafe` (each module that needs it opts
//! in). Knows nothing of the CRI.
//!
//! A container is described by an OCI runtime [`Spec`](oci_spec::runtime::Spec)
//! that the container service builds from the CRI config and the image
//! config: it already names everything the init does (namespaces by path
//! or new, mounts with fstab-style options, devices, user, capabilities,
//! rlimits, masked paths), it is what `verbose` status shows, and it keeps
//! a later OCI-runtime backend (runc) a drop-in. What the spec does not say
//! — cgroup directories to join (made by the cgroup manager), stdio, the
//! log — comes with it in the monitor's own config.

pub mod cgroup;
mod cgroupfs;
pub mod channel;
mod devices;
pub mod exec;
mod init;
pub mod mount;
mod mounts;
pub mod namespace;
pub mod path;
pub mod pid_holder;
mod process;
pub mod pty;
mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod sys;
pub mod userns;

pub use channel::SetupError;
pub use devices::host as host_devices;
pub use init::InitStdio;
pub use process::own_capabilities;
