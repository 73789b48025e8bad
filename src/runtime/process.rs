//! The last steps before exec, after `pivot_root`: rlimits, the user and
//! groups, capabilities, the working directory, no_new_privs, and the
//! program looked up in the container's `PATH`.
//!
//! The spec's five capability sets are applied as given (the container
//! service computes them in `security::capabilities`). A spec without
//! `capabilities` leaves them to the kernel: root keeps its sets, any other
//! uid loses them at setuid.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability as Cap};
use nix::unistd::{AccessFlags, Gid, Uid, access, chdir, setgid, setgroups, setuid};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

use super::channel::SetupError;
use super::sys;

/// What `execve` gets.
pub(crate) struct Exec {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
}

/// The capabilities this process can hand on to a container: its
/// bounding set (what a root `execve` of the monitor and init makes their
/// permitted set).
pub fn own_capabilities() -> std::io::Result<Capabilities> {
    let set = caps::read(None, CapSet::Bounding).map_err(std::io::Error::other)?;
    Ok(set
        .iter()
        .filter_map(|c| {
            let name = c.to_string();
            name.strip_prefix("CAP_").and_then(|n| n.parse().ok())
        })
        .collect())
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) fn set_rlimits(process: &Process) -> Result<(), SetupError> {
    for limit in process.rlimits().iter().flatten() {
        let resource = rlimit_number(limit.typ());
        sys::set_rlimit(resource, limit.soft(), limit.hard())
            .map_err(|e| SetupError::new(format!("setting {}", limit.typ()), e))?;
    }
    Ok(())
}

fn rlimit_number(typ: PosixRlimitType) -> u32 {
    use PosixRlimitType as T;
    match typ {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn to_caps(set: &Option<Capabilities>) -> Option<HashSet<Cap>> {
    set.as_ref().map(|set| {
        set.iter()
            .filter_map(|c| format!("CAP_{c}").parse::<Cap>().ok())
            .collect()
    })
}

/// User, groups, capabilities, cwd and no_new_privs, in the order the
/// kernel allows: the bounding set shrinks while still root, the
/// permitted set survives setuid through KEEPCAPS, then the sets are set.
pub(crate) fn drop_privileges(process: &Process) -> Result<(), SetupError> {
    let caps = process.capabilities().as_ref();
    if let Some(bounding) = caps.and_then(|c| to_caps(c.bounding())) {
        // The bounding set can only shrink, one capability at a time.
        let current = caps::read(None, CapSet::Bounding)
            .map_err(|e| SetupError::new("reading the bounding capabilities", e))?;
        for cap in current.difference(&bounding) {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(|e| SetupError::new(format!("dropping {cap} from the bounding set"), e))?;
        }
    }
    let user = process.user();
    // Capabilities survive setuid only when the spec sets them next;
    // without a set, the kernel's rule (a non-root uid loses them all)
    // must apply, or a non-root process would keep a permitted set it
    // could raise again.
    if caps.is_some() {
        nix::sys::prctl::set_keepcaps(true)
            .map_err(|e| SetupError::new("keeping capabilities", e))?;
    }
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    setgroups(&groups).map_err(|e| SetupError::new("setgroups", e))?;
    setgid(Gid::from_raw(user.gid())).map_err(|e| SetupError::new("setgid", e))?;
    setuid(Uid::from_raw(user.uid())).map_err(|e| SetupError::new("setuid", e))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| SetupError::new("keeping capabilities", e))?;
    if let Some(c) = caps {
        // Effective first: it may only shrink within the permitted set.
        for (set, value) in [
            (CapSet::Effective, c.effective()),
            (CapSet::Permitted, c.permitted()),
            (CapSet::Inheritable, c.inheritable()),
            (CapSet::Ambient, c.ambient()),
        ] {
            let value = to_caps(value).unwrap_or_default();
            caps::set(None, set, &value)
                .map_err(|e| SetupError::new(format!("setting the {set:?} capabilities"), e))?;
        }
    }
    if let Some(umask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    chdir(process.cwd()).map_err(|e| {
        SetupError::new(
            format!("entering the working dir {}", process.cwd().display()),
            e,
        )
    })?;
    cwd_inside_root(process.cwd())?;
    if process.no_new_privileges().unwrap_or(false) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| SetupError::new("no_new_privs", e))?;
    }
    Ok(())
}

/// The working directory must be inside the container's root. A path like
/// `/proc/self/fd/N` names whatever descriptor N is at this moment, and
/// until the exec this process still holds descriptors of its parent (a
/// cgroup directory, the state dir): a cwd there would be a host directory
/// the process could climb out of with `..` (runc CVE-2024-21626). The
/// kernel reports a cwd outside the root as unreachable, which `getcwd`
/// turns into an error.
fn cwd_inside_root(asked: &Path) -> Result<(), SetupError> {
    let what = || format!("the working dir {}", asked.display());
    match nix::unistd::getcwd() {
        Ok(cwd) if cwd.is_absolute() => Ok(()),
        Ok(cwd) => Err(SetupError::new(
            what(),
            format!("resolves outside the container's root ({})", cwd.display()),
        )),
        Err(e) => Err(SetupError::new(
            what(),
            format!("resolves outside the container's root ({e})"),
        )),
    }
}

fn cstring(s: &str, what: &str) -> Result<CString, SetupError> {
    CString::new(s).map_err(|_| SetupError::new(what, format!("{s:?} contains a NUL byte")))
}

/// The program, its arguments and environment, the program looked up in
/// the `PATH` of the container's environment as the shell would.
pub(crate) fn resolve_exec(process: &Process) -> Result<Exec, SetupError> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(program) = args.first() else {
        return Err(SetupError::new("exec", "the process has no args"));
    };
    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        let search = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        search
            .split(':')
            .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
            .find(|p| p.is_file() && access(p, AccessFlags::X_OK).is_ok())
            .ok_or_else(|| {
                SetupError::new(
                    "exec",
                    format!("executable file {program:?} not found in $PATH"),
                )
            })?
    };
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SetupError::new("exec", "program path contains a NUL byte"))?;
    Ok(Exec {
        path,
        args: args
            .iter()
            .map(|a| cstring(a, "exec args"))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|e| cstring(e, "exec env"))
            .collect::<Result<_, _>>()?,
    })
}
