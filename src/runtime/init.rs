//! The container's init, between `fork` in the monitor and `execve`: runs
//! only in that freshly forked, single-threaded child. Every step that can
//! fail names itself in the [`SetupError`] sent back to the monitor.
//!
//! Order: stdio and session → cgroups → namespaces (join, then create) →
//! hostname → rootfs, mounts, `pivot_root` → sysctls → masked and
//! read-only paths → rlimits → with a terminal, the console: a pty of the
//! container's devpts, its master sent to the monitor, its replica the
//! controlling terminal and stdio → the pod's user namespace (opened with
//! the others, joined only now) → seccomp (without no_new_privs) → user,
//! capabilities, cwd, no_new_privs → seccomp (with it) → program lookup →
//! `Created`, wait for `Start` → every fd above 2 close-on-exec → `execve`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{Uid, dup2_stderr, dup2_stdin, dup2_stdout, execve, fchown, sethostname, setsid};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use super::channel::{Channel, FromInit, SetupError, ToInit};
use super::{process, pty, rootfs, seccomp, sys};

/// The init's standard streams.
pub enum InitStdio {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A console the init allocates in the container's own devpts once
    /// the rootfs is complete; its master goes to the monitor.
    Tty,
}

pub(crate) struct Init<'a> {
    pub spec: &'a Spec,
    pub cgroup_dirs: &'a [PathBuf],
    pub stdio: InitStdio,
    pub channel: Channel,
}

/// Runs the init; never returns.
pub(crate) fn run(init: Init<'_>) -> ! {
    let exec = match setup(&init) {
        Ok(exec) => exec,
        Err(e) => {
            let _ = init.channel.send(&FromInit::Failed(e));
            std::process::exit(1);
        }
    };
    if init.channel.send(&FromInit::Created).is_err() {
        std::process::exit(1);
    }
    match init.channel.recv::<ToInit>() {
        Ok(Some(ToInit::Start)) => {}
        // The monitor went away or changed its mind: nothing to run.
        _ => std::process::exit(1),
    }
    let result = (|| {
        nix::sys::prctl::set_pdeathsig(None).map_err(|e| SetupError::new("pdeathsig", e))?;
        sys::close_range_cloexec(3).map_err(|e| SetupError::new("closing fds", e))?;
        // The monitor blocks SIGCHLD and Rust ignores SIGPIPE; both would
        // survive the exec.
        sys::reset_signals().map_err(|e| SetupError::new("resetting signals", e))?;
        let err = execve(&exec.path, &exec.args, &exec.env).err();
        Err::<(), _>(SetupError::new(
            format!("exec {}", exec.path.to_string_lossy()),
            err.map_or_else(|| "returned".to_string(), |e| e.to_string()),
        ))
    })();
    if let Err(e) = result {
        let _ = init.channel.send(&FromInit::Failed(e));
    }
    std::process::exit(127);
}

fn setup(init: &Init<'_>) -> Result<process::Exec, SetupError> {
    // Until the exec the init must not outlive its monitor.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| SetupError::new("pdeathsig", e))?;
    setsid().map_err(|e| SetupError::new("setsid", e))?;
    match &init.stdio {
        InitStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            dup2_stdin(stdin).map_err(|e| SetupError::new("stdin", e))?;
            dup2_stdout(stdout).map_err(|e| SetupError::new("stdout", e))?;
            dup2_stderr(stderr).map_err(|e| SetupError::new("stderr", e))?;
        }
        // Until the console exists, the monitor's stdio stays: nothing is
        // written to it, failures go through the channel.
        InitStdio::Tty => {}
    }
    // Whatever the monitor held (its control socket, log, a cgroup
    // directory for clone3) is of no use here and must not be reachable
    // through /proc/self/fd by the spec's working dir (CVE-2024-21626).
    sys::close_fds_from_except(3, init.channel.as_fd())
        .map_err(|e| SetupError::new("closing inherited descriptors", e))?;
    for dir in init.cgroup_dirs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, "0")
            .map_err(|e| SetupError::new(format!("joining cgroup {}", dir.display()), e))?;
    }
    let spec = init.spec;
    let (new_uts, userns) = namespaces(spec)?;
    let hostname = spec.hostname().as_deref().filter(|h| !h.is_empty());
    if new_uts && let Some(hostname) = hostname {
        sethostname(hostname).map_err(|e| SetupError::new("sethostname", e))?;
    }
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| SetupError::new("rootfs", "the spec has no root"))?;
    if !root.is_absolute() {
        return Err(SetupError::new("rootfs", "root.path must be absolute"));
    }
    let new_cgroupns = spec.linux().as_ref().is_some_and(|l| {
        l.namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none())
    });
    rootfs::build(spec, &root, new_cgroupns)?;
    // Through the container's own /proc, before /proc/sys goes read-only.
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        for (key, value) in sysctls {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value)
                .map_err(|e| SetupError::new(format!("setting sysctl {key}"), e))?;
        }
    }
    rootfs::finish(spec)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SetupError::new("process", "the spec has no process"))?;
    // Raising a hard rlimit needs the host's CAP_SYS_RESOURCE: before the
    // user namespace.
    process::set_rlimits(process)?;
    if matches!(init.stdio, InitStdio::Tty) {
        console(&init.channel, spec, process)?;
    }
    if let Some((fd, path)) = userns {
        join_user_namespace(&fd, &path)?;
    }
    let filter = seccomp::prepare(spec).map_err(|e| SetupError::new("seccomp profile", e))?;
    let install = |at| {
        seccomp::install_at(filter.as_ref(), at)
            .map_err(|e| SetupError::new("installing seccomp", e))
    };
    install(seccomp::InstallAt::BeforeDroppingPrivileges)?;
    process::drop_privileges(process)?;
    install(seccomp::InstallAt::AfterDroppingPrivileges)?;
    process::resolve_exec(process)
}

/// Allocates the container's console in its own devpts (mounted
/// `newinstance`; `/` is the container's root by now), hands the master to
/// the monitor and makes the replica the controlling terminal and stdio.
/// Done with the host's privileges, before the pod's user namespace (where
/// a replica the host's root made could not be given away): the replica
/// goes to the process's user, mapped, its group staying devpts's `gid=`
/// (tty, mapped by the rootfs), as a login's terminal does.
fn console(channel: &Channel, spec: &Spec, process: &Process) -> Result<(), SetupError> {
    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SetupError::new("opening the root for the console", e))?;
    let (master, replica) = pty::open_in_root(root.as_fd())
        .map_err(|e| SetupError::new("allocating the console in /dev/pts", e))?;
    let uid = process.user().uid();
    let uid = rootfs::PodIds::of(spec).map_or(uid, |ids| ids.uid(uid));
    fchown(&replica, Some(Uid::from_raw(uid)), None)
        .map_err(|e| SetupError::new("giving the console to the process's user", e))?;
    channel
        .send_with_fd(&FromInit::Terminal, master.as_fd())
        .map_err(|e| SetupError::new("sending the console to the monitor", e))?;
    // The container must never hold its own master.
    drop(master);
    sys::set_controlling_terminal(replica.as_fd())
        .map_err(|e| SetupError::new("controlling terminal", e))?;
    dup2_stdin(&replica).map_err(|e| SetupError::new("stdin", e))?;
    dup2_stdout(&replica).map_err(|e| SetupError::new("stdout", e))?;
    dup2_stderr(&replica).map_err(|e| SetupError::new("stderr", e))?;
    Ok(())
}

/// The pod's user namespace, opened before anything else is joined (the
/// path is the host's) and joined last.
type UserNs = Option<(OwnedFd, PathBuf)>;

/// Joins the namespaces the spec names by path and creates the others
/// (the PID namespace is the monitor's business: it applies to the fork).
/// A user namespace is only opened here: see [`join_user_namespace`].
/// Returns whether the UTS namespace is new, and the user namespace.
fn namespaces(spec: &Spec) -> Result<(bool, UserNs), SetupError> {
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut join = Vec::new();
    // A mount namespace of its own, always: the rootfs setup must not touch
    // the host's.
    let mut create = CloneFlags::CLONE_NEWNS;
    let mut new_uts = false;
    let mut userns = None;
    for ns in &list {
        let flag = match ns.typ() {
            LinuxNamespaceType::Pid => continue,
            LinuxNamespaceType::Mount => {
                if ns.path().is_some() {
                    return Err(SetupError::new(
                        "namespaces",
                        "joining a mount namespace is not supported",
                    ));
                }
                continue;
            }
            LinuxNamespaceType::User => {
                let Some(path) = ns.path() else {
                    return Err(SetupError::new(
                        "namespaces",
                        "a user namespace of its own per container is not supported (the pod's is joined by path)",
                    ));
                };
                let fd =
                    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
                        SetupError::new(format!("opening namespace {}", path.display()), e)
                    })?;
                userns = Some((fd, path.clone()));
                continue;
            }
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
        };
        match ns.path() {
            Some(path) => {
                let fd =
                    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
                        SetupError::new(format!("opening namespace {}", path.display()), e)
                    })?;
                join.push((fd, flag, path.clone()));
            }
            None => {
                create |= flag;
                new_uts |= flag == CloneFlags::CLONE_NEWUTS;
            }
        }
    }
    for (fd, flag, path) in &join {
        setns(fd, *flag)
            .map_err(|e| SetupError::new(format!("joining namespace {}", path.display()), e))?;
    }
    unshare(create).map_err(|e| SetupError::new("creating namespaces", e))?;
    Ok((new_uts, userns))
}

/// Enters the pod's user namespace, after the rootfs is complete: the
/// mounts, devices and `pivot_root` were made with the host's privileges in
/// a mount namespace the host's user namespace owns (so the container's
/// root cannot unmount or remount any of it), and only the process itself
/// runs with the pod's ids. The network, IPC and UTS namespaces it joined
/// are owned by this user namespace, so its capabilities apply there.
/// Joining gives every capability inside it; `drop_privileges` then sets
/// the user (ids as the container sees them) and the spec's capabilities.
fn join_user_namespace(fd: &OwnedFd, path: &Path) -> Result<(), SetupError> {
    setns(fd, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| SetupError::new(format!("joining namespace {}", path.display()), e))
}
