//! Running one more process in a running container (ExecSync, exec), as
//! the hidden mode `yonggi exec <spec.json>`: a fresh single-threaded
//! process that joins the container's cgroups and namespaces (from its
//! init's `/proc/<pid>/ns/*`), forks (the PID namespace applies to
//! children), and in the child sets rlimits, user, capabilities and cwd
//! and execs. The helper stays the child's parent: it exits with the
//! child's status (128 + n for signal n), so the caller just waits for it.
//!
//! Stdio is the helper's own, inherited: pipes, or with `terminal` a pty
//! replica on stdin, which becomes the command's controlling terminal.
//!
//! Stopping: SIGTERM or SIGINT to the helper kills the child's whole
//! process group (the child is a session leader) and waits for it; if the
//! helper itself is SIGKILLed, the child dies with it (parent-death
//! signal). A setup failure is written as a [`SetupError`] to the spec's
//! `report` file, so it never mixes with the command's own stderr.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, execve, setsid};
use oci_spec::runtime::{LinuxSeccomp, Process};
use serde::{Deserialize, Serialize};

use super::channel::{Channel, FromInit, SetupError};
use super::{process, seccomp, sys};

/// What to run where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The container's init, whose namespaces are joined.
    pub init_pid: i32,
    /// Args, env, cwd, user, capabilities, rlimits, no_new_privs.
    pub process: Process,
    /// Cgroup directories to join (as the container's init did).
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// Where a setup failure is written (JSON [`SetupError`]); the file is
    /// created empty, and stays empty when the command ran.
    pub report: PathBuf,
    /// The container's seccomp filter: an exec'd process is confined like
    /// the container's own (runc does the same).
    #[serde(default)]
    pub seccomp: Option<LinuxSeccomp>,
}

/// Exit code of the helper when setup failed (the report says why).
pub const SETUP_FAILED: u8 = 255;

const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    // Joining it changes our root and cwd.
    ("mnt", CloneFlags::CLONE_NEWNS),
    // The pod's user namespace, joined by the child last, after rlimits,
    // as the container's init did: inside it the host's privileges (to
    // join the others, to raise a hard rlimit) are gone.
    ("user", CloneFlags::CLONE_NEWUSER),
];

/// Entry point of the hidden `exec` mode.
pub fn main(spec_path: &Path) -> ExitCode {
    let spec: ExecSpec = match fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("yonggi exec: reading {}: {e}", spec_path.display());
            return ExitCode::from(SETUP_FAILED);
        }
    };
    // Opened now: after joining the container's mount namespace the host
    // path is out of reach.
    let mut report = match fs::File::create(&spec.report) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("yonggi exec: creating {}: {e}", spec.report.display());
            return ExitCode::from(SETUP_FAILED);
        }
    };
    match run(&spec) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Ok(bytes) = serde_json::to_vec(&e) {
                let _ = report.write_all(&bytes);
            }
            ExitCode::from(SETUP_FAILED)
        }
    }
}

fn run(spec: &ExecSpec) -> Result<u8, SetupError> {
    for dir in &spec.cgroup_dirs {
        fs::write(dir.join("cgroup.procs"), "0")
            .map_err(|e| SetupError::new(format!("joining cgroup {}", dir.display()), e))?;
    }
    let mut fds = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{}/ns/{name}", spec.init_pid);
        let ours = format!("/proc/self/ns/{name}");
        if fs::read_link(&theirs).ok() == fs::read_link(&ours).ok() {
            continue;
        }
        let fd =
            fs::File::open(&theirs).map_err(|e| SetupError::new(format!("opening {theirs}"), e))?;
        fds.push((fd, flag, theirs));
    }
    // The PID namespace applies to the fork; the others are joined by the
    // child, so this process stays in the host's mount namespace (and its
    // /proc) to wait and report.
    for (fd, flag, path) in &fds {
        if *flag == CloneFlags::CLONE_NEWPID {
            setns(fd, *flag).map_err(|e| SetupError::new(format!("joining {path}"), e))?;
        }
    }
    // SIGTERM/SIGINT/SIGCHLD arrive on a signalfd; blocked before the fork
    // so none is lost (the child unblocks them before exec).
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(sig);
    }
    mask.thread_block()
        .map_err(|e| SetupError::new("blocking signals", e))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| SetupError::new("signalfd", e))?;
    // Compiled before the fork: a bad filter is a setup error of its own.
    let nnp = spec.process.no_new_privileges().unwrap_or(false);
    let filter = seccomp::prepare_for(spec.seccomp.as_ref(), nnp)
        .map_err(|e| SetupError::new("seccomp profile", e))?;
    let (ours, theirs) = Channel::pair().map_err(|e| SetupError::new("channel", e))?;
    match sys::fork_single_threaded().map_err(|e| SetupError::new("fork", e))? {
        ForkResult::Child => {
            drop(ours);
            let err = child(&spec.process, &fds, filter.as_ref());
            let _ = theirs.send(&FromInit::Failed(err));
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            drop(fds);
            if let Some(FromInit::Failed(e)) = ours.recv::<FromInit>().ok().flatten() {
                let _ = waitpid(child, None);
                return Err(e);
            }
            Ok(wait_child(child, &sigfd))
        }
    }
}

/// In the forked child: returns only on failure.
fn child(
    proc_: &Process,
    namespaces: &[(fs::File, CloneFlags, String)],
    filter: Option<&seccomp::Prepared>,
) -> SetupError {
    let result = (|| {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| SetupError::new("pdeathsig", e))?;
        let join = |fd, flag, path: &String| {
            setns(fd, flag).map_err(|e| SetupError::new(format!("joining {path}"), e))
        };
        let late = [CloneFlags::CLONE_NEWPID, CloneFlags::CLONE_NEWUSER];
        for (fd, flag, path) in namespaces {
            if !late.contains(flag) {
                join(fd, *flag, path)?;
            }
        }
        setsid().map_err(|e| SetupError::new("setsid", e))?;
        if proc_.terminal().unwrap_or(false) {
            // The caller passed a pty replica as stdin: make it ours.
            let stdin = std::io::stdin();
            sys::set_controlling_terminal(stdin.as_fd())
                .map_err(|e| SetupError::new("controlling terminal", e))?;
        }
        process::set_rlimits(proc_)?;
        for (fd, flag, path) in namespaces {
            if *flag == CloneFlags::CLONE_NEWUSER {
                join(fd, *flag, path)?;
            }
        }
        let install = |at| {
            seccomp::install_at(filter, at).map_err(|e| SetupError::new("installing seccomp", e))
        };
        install(seccomp::InstallAt::BeforeDroppingPrivileges)?;
        process::drop_privileges(proc_)?;
        install(seccomp::InstallAt::AfterDroppingPrivileges)?;
        let exec = process::resolve_exec(proc_)?;
        sys::reset_signals().map_err(|e| SetupError::new("resetting signals", e))?;
        sys::close_range_cloexec(3).map_err(|e| SetupError::new("closing fds", e))?;
        let err = execve(&exec.path, &exec.args, &exec.env).err();
        Err(SetupError::new(
            format!("exec {}", exec.path.to_string_lossy()),
            err.map_or_else(|| "returned".to_string(), |e| e.to_string()),
        ))
    })();
    match result {
        Err(e) => e,
        Ok(()) => SetupError::new("exec", "returned"),
    }
}

fn wait_child(child: Pid, sigfd: &SignalFd) -> u8 {
    loop {
        match sigfd.read_signal() {
            Ok(Some(info)) if info.ssi_signo != Signal::SIGCHLD as u32 => {
                // Asked to stop: nothing the command started survives.
                let _ = killpg(child, Signal::SIGKILL);
            }
            _ => {}
        }
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    return u8::try_from(code).unwrap_or(u8::MAX);
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    // The group may hold more of it.
                    let _ = killpg(child, Signal::SIGKILL);
                    return u8::try_from(128 + sig as i32).unwrap_or(u8::MAX);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}
