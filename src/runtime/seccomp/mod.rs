//! Seccomp: the profile a container runs under, compiled to BPF and
//! installed by its init.
//!
//! - [`for_container`] (container service, at create): the CRI choice —
//!   unconfined, RuntimeDefault (the built-in `default.toml`) or a
//!   Localhost JSON file — resolved against the container's bounding
//!   capabilities into the OCI `linux.seccomp` the spec carries (`None`:
//!   unconfined or privileged). It is compiled once there too, so a bad
//!   profile fails the create, not the start.
//! - [`prepare`] (init, before it reports `Created`): the spec's
//!   `linux.seccomp` compiled to a [`Filter`], with its install point.
//! - [`install_at`] (init, around `drop_privileges`): after it when
//!   no_new_privs is set (it sets the bit); otherwise before it, while the
//!   init still has CAP_SYS_ADMIN (the kernel demands one of the two), so
//!   the init's last steps (setgroups/setgid/setuid, capset, prctl, chdir,
//!   the channel, exec) must be allowed by the profile, as under runc.
//!
//! Limits: the syscall table is libseccomp's (2.5.4 on Debian 12); names
//! it does not know are refused, so calls newer than it (fchmodat2,
//! cachestat, futex_wake, mseal, ...) fall to the default action.

#![allow(unsafe_code)]

mod bpf;
mod default;
mod profile;
#[cfg(test)]
mod real_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

use oci_spec::runtime::{Capabilities, LinuxSeccomp, Spec};

pub use bpf::{Filter, compile};
pub use default::runtime_default;
pub use profile::{Context, Profile, host_kernel, parse, resolve};

use crate::security;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp profile {path} must be an absolute path")]
    RelativePath { path: String },
    #[error("reading seccomp profile {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid seccomp profile {origin}: {detail}")]
    Parse { origin: String, detail: String },
    #[error("unknown syscall {0:?} in seccomp profile")]
    UnknownSyscall(String),
    #[error("seccomp action {0} is not supported")]
    UnsupportedAction(String),
    #[error("unknown seccomp architecture {0}")]
    UnknownArch(String),
    #[error("invalid seccomp profile: {0}")]
    Invalid(String),
    #[error("compiling the seccomp filter: {what}")]
    Compile {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("exporting the seccomp filter")]
    Export(#[source] std::io::Error),
    #[error("reading the kernel version")]
    Kernel(#[source] std::io::Error),
}

/// Reads and parses a Localhost profile file.
pub fn load(path: &Path) -> Result<Profile, Error> {
    let shown = path.display().to_string();
    if !path.is_absolute() {
        return Err(Error::RelativePath { path: shown });
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&bytes, &shown)
}

/// The `linux.seccomp` of a container's spec: `None` when unconfined or
/// privileged (a privileged container ignores its profile).
pub fn for_container(
    choice: &security::Profile,
    privileged: bool,
    bounding: &Capabilities,
) -> Result<Option<LinuxSeccomp>, Error> {
    if privileged {
        return Ok(None);
    }
    let profile = match choice {
        security::Profile::Unconfined => return Ok(None),
        security::Profile::RuntimeDefault => runtime_default()?,
        security::Profile::Localhost(path) => load(Path::new(path))?,
    };
    let ctx = Context {
        capabilities: bounding,
        kernel: host_kernel().map_err(Error::Kernel)?,
    };
    let resolved = resolve(&profile, &ctx)?;
    compile(&resolved)?;
    Ok(Some(resolved))
}

/// When the container's init installs its filter: the kernel takes a
/// filter from a task with no_new_privs or CAP_SYS_ADMIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallAt {
    /// no_new_privs is set: after the privileges are dropped (which sets
    /// it), so that as few of the init's own calls as possible run under
    /// the profile.
    AfterDroppingPrivileges,
    /// no_new_privs is not set: before the capabilities are dropped, while
    /// the init still holds CAP_SYS_ADMIN.
    BeforeDroppingPrivileges,
}

/// A spec's filter, compiled, with its install point.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub filter: Filter,
    pub at: InstallAt,
}

/// For the container init, before it reports `Created` (so a failure is a
/// setup error): the spec's `linux.seccomp` compiled, `None` without one.
pub fn prepare(spec: &Spec) -> Result<Option<Prepared>, Error> {
    let nnp = spec
        .process()
        .as_ref()
        .and_then(|p| p.no_new_privileges())
        .unwrap_or(false);
    prepare_for(
        spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
        nnp,
    )
}

/// The same for a process joining a running container (exec): its
/// container's `linux.seccomp` and its own no_new_privs.
pub fn prepare_for(seccomp: Option<&LinuxSeccomp>, nnp: bool) -> Result<Option<Prepared>, Error> {
    let Some(seccomp) = seccomp else {
        return Ok(None);
    };
    Ok(Some(Prepared {
        filter: compile(seccomp)?,
        at: if nnp {
            InstallAt::AfterDroppingPrivileges
        } else {
            InstallAt::BeforeDroppingPrivileges
        },
    }))
}

/// Installs `prepared`'s filter if `point` is where it goes (the init calls
/// this at both points). Does not allocate.
pub fn install_at(prepared: Option<&Prepared>, point: InstallAt) -> std::io::Result<()> {
    match prepared {
        Some(p) if p.at == point => p.filter.install(),
        _ => Ok(()),
    }
}
