//! The holder of a pod-level PID namespace: `yonggi pod-init`.
//!
//! A PID namespace whose init has exited refuses new processes, so unlike the
//! network, IPC and UTS namespaces it cannot be kept by a bind mount alone.
//! The holder is the yonggi binary itself in a hidden mode: the daemon clones
//! it straight into a new PID namespace (it is PID 1 there) and it execs at
//! once; the holder joins the pod's other namespaces, reports `ready` on a
//! pipe, then only reaps the orphans the kernel hands it, forever.
//!
//! As PID 1 of its namespace it ignores every signal it has no handler for,
//! from inside the pod and from the host alike; only SIGKILL from the host
//! ends it, and with it every process left in the namespace.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::namespace::{NsKind, ns_inode};

/// The hidden subcommand that runs [`run`].
pub const SUBCOMMAND: &str = "pod-init";

/// How long the daemon waits for a new holder to report `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const READY: &[u8] = b"ready\n";
/// Enough for the clone callback, which only calls dup2 and execv.
const CHILD_STACK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("cannot prepare the pid namespace holder")]
    Prepare(#[source] std::io::Error),
    #[error("cannot clone the pid namespace holder")]
    Clone(#[source] Errno),
    #[error("the pid namespace holder failed before it was ready ({0})")]
    Failed(String),
    #[error("the pid namespace holder was not ready within {0:?}")]
    Timeout(Duration),
    #[error("cannot kill the pid namespace holder {pid}")]
    Kill {
        pid: i32,
        #[source]
        source: Errno,
    },
}

/// Namespaces the holder joins before it reports ready, so that it shares the
/// pod's view (`nsenter -t <holder>` then shows the pod).
#[derive(Debug, Clone, Default)]
pub struct HolderArgs {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

/// Clones a holder into a new PID namespace; returns its pid (in the daemon's
/// namespace) once it runs and has joined `args`' namespaces. The holder is a
/// child of the calling process, which must reap it after killing it.
pub fn spawn(args: &HolderArgs) -> Result<i32, HolderError> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| HolderError::Prepare(std::io::Error::from(e)))?;
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(HolderError::Prepare)?;
    let cstring = |s: &str| CString::new(s).map_err(|e| HolderError::Prepare(e.into()));
    let exe = cstring("/proc/self/exe")?;
    let mut strings = vec![cstring("yonggi")?, cstring(SUBCOMMAND)?];
    for (flag, path) in [
        ("--net", &args.net),
        ("--ipc", &args.ipc),
        ("--uts", &args.uts),
    ] {
        if let Some(path) = path {
            strings.push(cstring(flag)?);
            let text = path.to_str().ok_or_else(|| {
                HolderError::Prepare(std::io::Error::other("namespace path is not UTF-8"))
            })?;
            strings.push(cstring(text)?);
        }
    }
    let mut argv: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let null_fd = devnull.as_raw_fd();
    let pipe_fd = write_end.as_raw_fd();
    let exe_ptr = exe.as_ptr();
    let argv_ptr = argv.as_ptr();
    let mut stack = vec![0u8; CHILD_STACK];
    // The child of a multi-threaded process may only make async-signal-safe
    // calls until it execs: everything it touches was prepared above, and it
    // does not allocate.
    let callback = Box::new(move || -> isize {
        // SAFETY: dup2/execv/_exit on descriptors and C strings that stay valid
        // in the child's copy of the parent's memory; no allocation, no locks.
        unsafe {
            if libc::dup2(null_fd, 0) < 0 || libc::dup2(pipe_fd, 1) < 0 {
                libc::_exit(126);
            }
            libc::execv(exe_ptr, argv_ptr);
            libc::_exit(127)
        }
    });
    // SAFETY: the callback only execs (see above) and the stack is large
    // enough for it; SIGCHLD makes the holder a normal, waitable child.
    let pid = unsafe {
        nix::sched::clone(
            callback,
            &mut stack,
            CloneFlags::CLONE_NEWPID,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(HolderError::Clone)?;
    drop(write_end);
    drop(strings);
    match wait_ready(File::from(read_end)) {
        Ok(()) => Ok(pid.as_raw()),
        Err(e) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let status = nix::sys::wait::waitpid(pid, None);
            Err(match (e, status) {
                (HolderError::Failed(_), Ok(WaitStatus::Exited(_, code))) => {
                    HolderError::Failed(format!("exit code {code}"))
                }
                (HolderError::Failed(_), Ok(WaitStatus::Signaled(_, sig, _))) => {
                    HolderError::Failed(format!("killed by {sig}"))
                }
                (e, _) => e,
            })
        }
    }
}

fn wait_ready(mut pipe: File) -> Result<(), HolderError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HolderError::Timeout(READY_TIMEOUT));
        }
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(HolderError::Prepare(e.into())),
        }
        let mut buf = [0u8; 16];
        match pipe.read(&mut buf) {
            Ok(0) => return Err(HolderError::Failed("no ready message".to_string())),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(READY) {
                    return Ok(());
                }
                if got.len() >= READY.len() {
                    return Err(HolderError::Failed("unexpected message".to_string()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HolderError::Prepare(e)),
        }
    }
}

/// Kills a holder if `pid` still is the holder of the namespace with inode
/// `pidns` (a recycled pid is left alone), then reaps it if it is our child.
/// Killing what is gone succeeds.
pub fn kill(pid: i32, pidns: u64, our_child: bool) -> Result<(), HolderError> {
    let target = Pid::from_raw(pid);
    let proc_ns = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    if ns_inode(&proc_ns) == Some(pidns) {
        match nix::sys::signal::kill(target, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => return Err(HolderError::Kill { pid, source }),
        }
    }
    if our_child {
        // Any answer but EINTR ends it; ECHILD means reaped already.
        while let Err(Errno::EINTR) = nix::sys::wait::waitpid(target, None) {}
    } else {
        // Someone else reaps it; wait until it no longer runs.
        let deadline = Instant::now() + Duration::from_secs(2);
        while is_alive(pid, pidns) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

/// Whether `pid` still is the live holder of the namespace with inode `pidns`.
/// A zombie is not alive (its pid namespace link still resolves).
pub fn is_alive(pid: i32, pidns: u64) -> bool {
    if ns_inode(Path::new(&format!("/proc/{pid}/ns/pid"))) != Some(pidns) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !(state.is_empty() || state.starts_with(['Z', 'X']))
}

fn close_from(first: u32) -> std::io::Result<()> {
    // SAFETY: close_range takes integers only; this single-threaded process
    // has just exec'd and owns nothing at or above `first`.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `yonggi pod-init`: the holder itself. Runs single-threaded, before any
/// async runtime exists.
pub fn run(args: &HolderArgs) -> ExitCode {
    // It lives as long as the pod, PID 1 of the namespace the containers
    // share: it keeps nothing of the daemon's (descriptors the daemon let
    // leak without close-on-exec) beyond stdin and its ready pipe.
    if let Err(e) = close_from(3) {
        eprintln!("yonggi pod-init: cannot close inherited descriptors: {e}");
        return ExitCode::FAILURE;
    }
    // Its own session: signals to the daemon's process group never reach it.
    let _ = nix::unistd::setsid();
    // Do not pin the daemon's working directory.
    let _ = nix::unistd::chdir("/");
    for (path, kind) in [
        (&args.net, NsKind::Net),
        (&args.ipc, NsKind::Ipc),
        (&args.uts, NsKind::Uts),
    ] {
        let Some(path) = path else { continue };
        let joined = File::open(path)
            .and_then(|file| nix::sched::setns(file, kind.flag()).map_err(std::io::Error::from));
        if let Err(e) = joined {
            eprintln!(
                "yonggi pod-init: cannot join {} namespace {}: {e}",
                kind.name(),
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let mut sigchld = SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    if let Err(e) = sigchld.thread_block() {
        eprintln!("yonggi pod-init: cannot block SIGCHLD: {e}");
        return ExitCode::FAILURE;
    }
    if nix::unistd::write(std::io::stdout(), READY) != Ok(READY.len()) {
        return ExitCode::FAILURE;
    }
    if let Ok(devnull) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded
        // process; `devnull` is open for the duration of the calls.
        unsafe {
            libc::dup2(devnull.as_raw_fd(), 1);
            libc::dup2(devnull.as_raw_fd(), 2);
        }
    }
    loop {
        loop {
            match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        // SIGCHLD is blocked, so one that arrives between the reaping above
        // and this wait stays pending and ends the wait at once.
        let _ = sigchld.wait();
    }
}
