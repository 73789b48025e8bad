//! The daemon's side: launch a monitor, then talk to it over `ctl.sock`.
//! Blocking calls (the container service runs them on a blocking thread);
//! launching is a plain fork+exec of the yonggi binary, safe from a
//! threaded process.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use oci_spec::runtime::Spec;

use super::protocol::{MonitorState, Report, Request, Response};
use super::{ExitStatus, MonitorConfig, Paths, exit};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the OCI spec {path}")]
    Spec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("running the monitor {binary}")]
    Exec {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the monitor did not report within {0:?}")]
    Timeout(Duration),
    #[error("the monitor failed before reporting: {0}")]
    Crashed(String),
    #[error("container setup failed: {step}: {message}")]
    Setup { step: String, message: String },
    #[error("talking to the monitor in {dir}")]
    Control {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the monitor refused: {0}")]
    Refused(String),
    #[error("unexpected answer from the monitor to {0}")]
    Unexpected(&'static str),
    #[error("the monitor of {0} is gone and left no exit status")]
    Gone(PathBuf),
    #[error("reading the exit status in {dir}")]
    ReadExit {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A monitor that has created the container (not started yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launched {
    pub monitor_pid: i32,
    pub init_pid: i32,
}

/// Writes `spec` and `config` into `state_dir` (which must exist), starts
/// `binary monitor <state_dir>` and waits (at most `timeout`) until the
/// container is created: namespaces, mounts and user are in place and the
/// init waits for [`start`]. A setup failure comes back as
/// [`MonitorError::Setup`] naming the step; nothing keeps running then.
pub fn launch(
    binary: &Path,
    state_dir: &Path,
    spec: &Spec,
    config: &MonitorConfig,
    timeout: Duration,
) -> Result<Launched, MonitorError> {
    let spec_path = Paths::spec(state_dir);
    spec.save(&spec_path).map_err(|source| MonitorError::Spec {
        path: spec_path.clone(),
        source,
    })?;
    let config_path = Paths::config(state_dir);
    let bytes = serde_json::to_vec(config).map_err(io::Error::other);
    bytes
        .and_then(|b| std::fs::write(&config_path, b))
        .map_err(|source| MonitorError::Write {
            path: config_path,
            source,
        })?;
    let exec_err = |source| MonitorError::Exec {
        binary: binary.to_path_buf(),
        source,
    };
    let mut child = Command::new(binary)
        .arg("monitor")
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(exec_err)?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(exec_err(io::Error::other("no pipes to the monitor")));
    };
    let ready = wait_readable(&stdout, timeout).map_err(exec_err)?;
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(MonitorError::Timeout(timeout));
    }
    let mut report = String::new();
    let read = BufReader::new(&mut stdout).read_line(&mut report);
    // The first process exits as soon as the real monitor is forked.
    let _ = child.wait();
    read.map_err(exec_err)?;
    if report.trim().is_empty() {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        return Err(MonitorError::Crashed(text.trim().to_string()));
    }
    match serde_json::from_str::<Report>(&report) {
        Ok(Report::Created {
            monitor_pid,
            init_pid,
        }) => Ok(Launched {
            monitor_pid,
            init_pid,
        }),
        Ok(Report::Failed { step, message }) => Err(MonitorError::Setup { step, message }),
        Err(e) => Err(MonitorError::Crashed(format!("bad report {report:?}: {e}"))),
    }
}

fn wait_readable(fd: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) => return Ok(n > 0),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn connect(state_dir: &Path) -> io::Result<UnixStream> {
    let path = Paths::control(state_dir);
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(&path);
    }
    // sun_path holds 108 bytes: reach a deep state dir through its fd.
    let dir = std::fs::File::open(state_dir)?;
    use std::os::fd::AsRawFd;
    let short = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), super::CONTROL);
    UnixStream::connect(short)
}

/// One request/response; `None` when no monitor listens (it has exited).
fn call(state_dir: &Path, request: &Request) -> Result<Option<Response>, MonitorError> {
    call_within(state_dir, request, None).map(|r| r.unwrap_or(None))
}

/// [`call`] waiting at most `timeout` for the answer: `Ok(None)` when it
/// did not come in time.
/// Connects to the monitor and sends one request line. `None` when the
/// monitor is gone: no socket, nobody accepting, or it exited with our
/// connection still in its backlog, before the request could be sent.
fn send(state_dir: &Path, request: &Request) -> Result<Option<UnixStream>, MonitorError> {
    let err = |source| MonitorError::Control {
        dir: state_dir.to_path_buf(),
        source,
    };
    let gone = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::NotFound
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
        )
    };
    let mut stream = match connect(state_dir) {
        Ok(s) => s,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mut line = serde_json::to_vec(request).map_err(|e| err(io::Error::other(e)))?;
    line.push(b'\n');
    match stream.write_all(&line) {
        Ok(()) => Ok(Some(stream)),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(err(e)),
    }
}

fn call_within(
    state_dir: &Path,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<Option<Option<Response>>, MonitorError> {
    let err = |source| MonitorError::Control {
        dir: state_dir.to_path_buf(),
        source,
    };
    let Some(stream) = send(state_dir, request)? else {
        return Ok(Some(None));
    };
    stream.set_read_timeout(timeout).map_err(err)?;
    let mut reply = String::new();
    match BufReader::new(stream).read_line(&mut reply) {
        Ok(_) => {}
        // It exited with our connection still in its backlog.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Some(None)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(err(e)),
    }
    if reply.is_empty() {
        // It exited between accept and answer.
        return Ok(Some(None));
    }
    serde_json::from_str(&reply)
        .map(|r| Some(Some(r)))
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))
}

fn expect_ok(state_dir: &Path, response: Option<Response>) -> Result<(), MonitorError> {
    match response {
        Some(Response::Ok) => Ok(()),
        Some(Response::Error(message)) => Err(MonitorError::Refused(message)),
        Some(Response::SetupFailed { step, message }) => Err(MonitorError::Setup { step, message }),
        Some(Response::Exited(_)) | None => Err(MonitorError::Gone(state_dir.to_path_buf())),
        Some(Response::State(_)) => Err(MonitorError::Unexpected("a command")),
    }
}

/// Lets the created container exec; returns once it has (or failed to).
pub fn start(state_dir: &Path) -> Result<(), MonitorError> {
    match call(state_dir, &Request::Start)? {
        Some(Response::SetupFailed { step, message }) => Err(MonitorError::Setup { step, message }),
        other => expect_ok(state_dir, other),
    }
}

/// Sends `signal` to the container's init. Succeeds when it has exited
/// already (a stop is idempotent).
pub fn kill(state_dir: &Path, signal: i32) -> Result<(), MonitorError> {
    match call(state_dir, &Request::Kill { signal })? {
        None | Some(Response::Exited(_)) => Ok(()),
        other => expect_ok(state_dir, other),
    }
}

/// Blocks until the container has exited and returns how.
pub fn wait(state_dir: &Path) -> Result<ExitStatus, MonitorError> {
    match call(state_dir, &Request::Wait)? {
        Some(Response::Exited(status)) => Ok(status),
        Some(Response::Error(message)) => Err(MonitorError::Refused(message)),
        Some(Response::Ok | Response::SetupFailed { .. } | Response::State(_)) => {
            Err(MonitorError::Unexpected("wait"))
        }
        None => read_exit(state_dir)?.ok_or_else(|| MonitorError::Gone(state_dir.to_path_buf())),
    }
}

/// [`wait`] for at most `timeout`: `None` when the container is still
/// running then (a stop's grace period).
pub fn wait_timeout(
    state_dir: &Path,
    timeout: Duration,
) -> Result<Option<ExitStatus>, MonitorError> {
    match call_within(state_dir, &Request::Wait, Some(timeout))? {
        None => Ok(None),
        Some(Some(Response::Exited(status))) => Ok(Some(status)),
        Some(Some(Response::Error(message))) => Err(MonitorError::Refused(message)),
        Some(Some(_)) => Err(MonitorError::Unexpected("wait")),
        Some(None) => read_exit(state_dir)?
            .map(Some)
            .ok_or_else(|| MonitorError::Gone(state_dir.to_path_buf())),
    }
}

/// The live monitor's view (init pid, started), or `None` when no monitor
/// runs for `state_dir` (look at [`read_exit`] then).
pub fn state(state_dir: &Path) -> Result<Option<MonitorState>, MonitorError> {
    match call(state_dir, &Request::State)? {
        Some(Response::State(state)) => Ok(Some(state)),
        Some(Response::Error(message)) => Err(MonitorError::Refused(message)),
        Some(_) => Err(MonitorError::Unexpected("state")),
        None => Ok(None),
    }
}

/// Makes the monitor reopen the log file (after kubelet rotated it).
pub fn reopen_log(state_dir: &Path) -> Result<(), MonitorError> {
    let response = call(state_dir, &Request::ReopenLog)?;
    expect_ok(state_dir, response)
}

/// Opens an attach session: the returned connection carries
/// [`attach_frame`](super::attach_frame)s, output from the monitor until
/// its `EXIT` frame, stdin (when `stdin`), stdin end and resizes to it.
/// `None` when the container has exited (or its monitor is gone).
pub fn attach(state_dir: &Path, stdin: bool) -> Result<Option<UnixStream>, MonitorError> {
    let err = |source| MonitorError::Control {
        dir: state_dir.to_path_buf(),
        source,
    };
    let Some(mut stream) = send(state_dir, &Request::Attach { stdin })? else {
        return Ok(None);
    };
    // Frames may follow the answer at once: read the line byte by byte, so
    // that none of them is taken here.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(err)?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if reply.len() < 4096 => reply.push(byte[0]),
            Ok(_) => return Err(MonitorError::Unexpected("attach")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(err(e)),
        }
    }
    stream.set_read_timeout(None).map_err(err)?;
    match serde_json::from_slice::<Response>(&reply) {
        Ok(Response::Ok) => Ok(Some(stream)),
        Ok(Response::Exited(_)) => Ok(None),
        Ok(Response::Error(message)) => Err(MonitorError::Refused(message)),
        Ok(_) => Err(MonitorError::Unexpected("attach")),
        Err(e) => Err(err(io::Error::new(io::ErrorKind::InvalidData, e))),
    }
}

/// The recorded exit, if the container has exited.
pub fn read_exit(state_dir: &Path) -> Result<Option<ExitStatus>, MonitorError> {
    exit::read(&Paths::exit(state_dir)).map_err(|source| MonitorError::ReadExit {
        dir: state_dir.to_path_buf(),
        source,
    })
}
