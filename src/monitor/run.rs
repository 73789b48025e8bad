//! The monitor process itself (`yonggi monitor <state-dir>`).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, dup2_stderr, dup2_stdout, pipe2, read, setsid};
use oci_spec::runtime::Spec;

use super::attach::Attach;
use super::exit::{self, ExitStatus, OomCounter};
use super::log::{CriLog, MAX_LINE, Stream};
use super::protocol::{MonitorState, Report, Request, Response};
use super::{CONTROL, MonitorConfig, Paths};
use crate::runtime::spawn::{self, CgroupJoin, Created, SpawnError};
use crate::runtime::{InitStdio, sys};

/// Entry point of the hidden `monitor` mode. Runs before any async runtime
/// or thread exists; it forks.
pub fn main(state_dir: &Path) -> ExitCode {
    let loaded = load(state_dir);
    let (spec, config) = match loaded {
        Ok(loaded) => loaded,
        Err(message) => return fail("reading the monitor config", message),
    };
    match sys::fork_single_threaded() {
        Err(e) => return fail("forking the monitor", e),
        // The launcher waits for this process; the monitor lives on in the
        // child, reparented to init (or the nearest subreaper).
        Ok(ForkResult::Parent { .. }) => return ExitCode::SUCCESS,
        Ok(ForkResult::Child) => {}
    }
    match detach(state_dir) {
        Ok(()) => {}
        Err(e) => return fail("detaching the monitor", e),
    }
    run(&spec, config)
}

fn load(state_dir: &Path) -> Result<(Spec, MonitorConfig), String> {
    let spec = Spec::load(Paths::spec(state_dir)).map_err(|e| e.to_string())?;
    let text = fs::read(Paths::config(state_dir)).map_err(|e| e.to_string())?;
    let config = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    Ok((spec, config))
}

/// Reports a failure to the launcher (stdout) and exits.
fn fail(step: &str, message: impl std::fmt::Display) -> ExitCode {
    report(&Report::Failed {
        step: step.to_string(),
        message: message.to_string(),
    });
    ExitCode::FAILURE
}

fn report(report: &Report) {
    if let Ok(mut line) = serde_json::to_vec(report) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

fn detach(state_dir: &Path) -> std::io::Result<()> {
    setsid()?;
    nix::sys::prctl::set_child_subreaper(true)?;
    std::env::set_current_dir(state_dir)?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("monitor.log")?;
    dup2_stderr(&log)?;
    Ok(())
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// The monitor's ends of the init's stdio.
struct Stdio {
    outputs: Vec<(Stream, OwnedFd)>,
    /// Kept for attach: the stdin pipe's write end, or the pty master.
    stdin: Option<OwnedFd>,
    /// The pty master, for attach's resizes.
    pty: Option<OwnedFd>,
}

/// The init's stdio and the monitor's ends.
fn stdio(terminal: bool, want_stdin: bool) -> nix::Result<(InitStdio, Stdio)> {
    if terminal {
        // The init allocates the console in the container's devpts and
        // sends its master: see `with_console`.
        let ends = Stdio {
            outputs: Vec::new(),
            stdin: None,
            pty: None,
        };
        return Ok((InitStdio::Tty, ends));
    }
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (stdin_r, stdin_w) = if want_stdin {
        let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
        (r, Some(w))
    } else {
        (
            open(
                "/dev/null",
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?,
            None,
        )
    };
    let init = InitStdio::Pipes {
        stdin: stdin_r,
        stdout: out_w,
        stderr: err_w,
    };
    let ends = Stdio {
        outputs: vec![(Stream::Stdout, out_r), (Stream::Stderr, err_r)],
        stdin: stdin_w,
        pty: None,
    };
    Ok((init, ends))
}

impl Stdio {
    /// Takes the console's master (received close-on-exec) as the output,
    /// attach's stdin (when asked) and the resizer.
    fn with_console(&mut self, master: OwnedFd, want_stdin: bool) -> nix::Result<()> {
        let dup = || master.try_clone().map_err(|_| Errno::EMFILE);
        self.stdin = if want_stdin { Some(dup()?) } else { None };
        self.pty = Some(dup()?);
        self.outputs = vec![(Stream::Stdout, master)];
        Ok(())
    }
}

struct Monitor {
    init: Pid,
    created: Option<Created>,
    started: bool,
    log: CriLog,
    outputs: Vec<(Stream, OwnedFd)>,
    attach: Attach,
    waiters: Vec<UnixStream>,
    /// Accepted connections whose request line has not fully arrived; read
    /// from the poll loop so a slow client never stalls the log.
    pending: Vec<(UnixStream, Vec<u8>)>,
    oom: OomCounter,
}

fn run(spec: &Spec, config: MonitorConfig) -> ExitCode {
    let _ = write_atomic(
        &Paths::monitor_pid(Path::new(".")),
        &std::process::id().to_string(),
    );
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if let Err(e) = mask.thread_block() {
        return fail("blocking SIGCHLD", e);
    }
    let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => return fail("creating the signalfd", e),
    };
    let oom = OomCounter::new(config.oom_events.clone());
    let log = match CriLog::open(&config.log_path, MAX_LINE) {
        Ok(log) => log,
        Err(e) => return fail(&format!("opening the log {}", config.log_path.display()), e),
    };
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let (init_stdio, mut io) = match stdio(terminal, config.stdin) {
        Ok(io) => io,
        Err(e) => return fail("creating the container's stdio", e),
    };
    let _ = fs::remove_file(CONTROL);
    let listener = match UnixListener::bind(CONTROL) {
        Ok(l) => l,
        Err(e) => return fail("binding the control socket", e),
    };
    let clone_into = match &config.clone_into_cgroup {
        None => None,
        Some(dir) => {
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            match open(dir.as_path(), flags, Mode::empty()) {
                Ok(fd) => Some(fd),
                Err(e) => return fail(&format!("opening cgroup {}", dir.display()), e),
            }
        }
    };
    let join = CgroupJoin {
        clone_into: clone_into.as_ref().map(|fd| fd.as_fd()),
        dirs: &config.cgroup_dirs,
    };
    let mut created = match spawn::create(spec, join, init_stdio) {
        Ok(created) => created,
        Err(e) => {
            let _ = fs::remove_file(CONTROL);
            return match e {
                SpawnError::Setup(s) => fail(&s.step, s.message),
                other => fail("creating the container", chain(&other)),
            };
        }
    };
    if terminal {
        let Some(master) = created.take_terminal() else {
            let _ = fs::remove_file(CONTROL);
            return fail("creating the container", "the init sent no console");
        };
        if let Err(e) = io.with_console(master, config.stdin) {
            let _ = fs::remove_file(CONTROL);
            return fail("taking the container's console", e);
        }
    }
    let attach = match Attach::new(io.stdin, io.pty, config.stdin_once) {
        Ok(attach) => attach,
        Err(e) => {
            let _ = fs::remove_file(CONTROL);
            return fail("setting up attach", e);
        }
    };
    let init = created.pid;
    let _ = write_atomic(Path::new("init.pid"), &init.to_string());
    report(&Report::Created {
        monitor_pid: i32::try_from(std::process::id()).unwrap_or(-1),
        init_pid: init.as_raw(),
    });
    // The launcher has its answer; let its read see end of file.
    if let Ok(null) = open(
        "/dev/null",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        let _ = dup2_stdout(&null);
    }
    let mut monitor = Monitor {
        init,
        created: Some(created),
        started: false,
        log,
        outputs: io.outputs,
        attach,
        waiters: Vec::new(),
        pending: Vec::new(),
        oom,
    };
    let status = monitor.serve(&sigfd, &listener);
    monitor.drain();
    if let Err(e) = exit::write(&Paths::exit(Path::new(".")), &status) {
        eprintln!("yonggi monitor: writing the exit file: {e}");
    }
    for mut waiter in monitor.waiters.drain(..) {
        respond(&mut waiter, &Response::Exited(status));
    }
    monitor.attach.finish();
    // Late callers still queued on the socket get the answer too.
    let _ = listener.set_nonblocking(true);
    while let Ok((mut stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = read_request(&stream);
        respond(&mut stream, &Response::Exited(status));
    }
    let _ = fs::remove_file(CONTROL);
    ExitCode::SUCCESS
}

fn respond(stream: &mut UnixStream, response: &Response) {
    if let Ok(mut line) = serde_json::to_vec(response) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

fn read_request(stream: &UnixStream) -> Option<Request> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Monitor {
    /// Runs until the init has been reaped; returns how it ended.
    fn serve(&mut self, sigfd: &SignalFd, listener: &UnixListener) -> ExitStatus {
        let mut buf = [0u8; 8192];
        loop {
            let (sig_ready, conn_ready, ready_outputs, ready_pending, ready_attach) = {
                let mut fds = vec![
                    PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                ];
                for (_, fd) in &self.outputs {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
                for (stream, _) in &self.pending {
                    fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
                }
                let attach_at = fds.len();
                self.attach.poll_fds(&mut fds);
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => eprintln!("yonggi monitor: poll: {e}"),
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                let n = self.outputs.len();
                let outputs: Vec<bool> = fds[2..2 + n].iter().map(ready).collect();
                let pending: Vec<bool> = fds[2 + n..attach_at].iter().map(ready).collect();
                let attach: Vec<PollFlags> = fds[attach_at..]
                    .iter()
                    .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                    .collect();
                (ready(&fds[0]), ready(&fds[1]), outputs, pending, attach)
            };
            // First: its poll results are for the sessions as they were.
            self.attach.ready(&ready_attach);
            for (i, ready) in ready_outputs.iter().enumerate().rev() {
                if *ready && !self.pump(i, &mut buf) {
                    let (stream, _) = self.outputs.remove(i);
                    let _ = self.log.finish(stream);
                }
            }
            for (i, ready) in ready_pending.iter().enumerate().rev() {
                if *ready {
                    self.read_pending(i);
                }
            }
            if conn_ready
                && let Ok((stream, _)) = listener.accept()
                && stream.set_nonblocking(true).is_ok()
            {
                self.pending.push((stream, Vec::new()));
            }
            if sig_ready {
                while let Ok(Some(_)) = sigfd.read_signal() {}
                if let Some(status) = self.reap() {
                    return status;
                }
            }
        }
    }

    /// Reads what pending connection `i` sent; once its line is complete,
    /// answers it.
    fn read_pending(&mut self, i: usize) {
        use std::io::Read;
        let mut chunk = [0u8; 512];
        let (stream, line) = &mut self.pending[i];
        match stream.read(&mut chunk) {
            Ok(0) => {
                self.pending.remove(i);
            }
            Ok(n) => {
                line.extend_from_slice(&chunk[..n]);
                if let Some(end) = line.iter().position(|&b| b == b'\n') {
                    let (stream, line) = self.pending.remove(i);
                    let request = serde_json::from_slice::<Request>(&line[..end]).ok();
                    if stream.set_nonblocking(false).is_ok() {
                        self.handle(stream, request, &line[end + 1..]);
                    }
                } else if line.len() > 4096 {
                    self.pending.remove(i);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.pending.remove(i);
            }
        }
    }

    /// Moves one read of output `i` to the log; false at end of stream.
    fn pump(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let (stream, fd) = &self.outputs[i];
        match read(fd.as_fd(), buf) {
            Ok(0) => false,
            Ok(n) => {
                let stream = *stream;
                if let Err(e) = self.log.write(stream, &buf[..n]) {
                    eprintln!("yonggi monitor: writing the log: {e}");
                }
                self.attach.output(stream, &buf[..n]);
                true
            }
            Err(Errno::EINTR | Errno::EAGAIN) => true,
            // EIO: the pty's other side is closed for good.
            Err(_) => false,
        }
    }

    /// After the exit: what the container wrote before it died is in the
    /// pipes (or the pty's buffers, which may lag a little), so read until
    /// end of file, or until nothing came for a moment (a leftover process
    /// outside a PID namespace may hold the pipe open).
    fn drain(&mut self) {
        let mut buf = [0u8; 8192];
        while !self.outputs.is_empty() {
            let mut fds: Vec<PollFd> = self
                .outputs
                .iter()
                .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::from(100u8)) {
                Ok(0) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            for (i, ready) in ready.iter().enumerate().rev() {
                if *ready && !self.pump(i, &mut buf) {
                    let (stream, _) = self.outputs.remove(i);
                    let _ = self.log.finish(stream);
                }
            }
        }
        for (stream, _) in self.outputs.drain(..) {
            let _ = self.log.finish(stream);
        }
    }

    /// Reaps every exited child; the init's status once it is among them.
    fn reap(&mut self) -> Option<ExitStatus> {
        let mut found = None;
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.init => {
                    found = Some((code, None));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.init => {
                    found = Some((128 + sig as i32, Some(sig as i32)));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                // Orphans re-parented to us (we are a subreaper).
                Ok(_) => continue,
            }
        }
        let (exit_code, signal) = found?;
        Some(ExitStatus {
            exit_code,
            signal,
            finished_at_ns: now_ns(),
            oom_killed: self.oom.rose(),
        })
    }

    /// Answers a request; `early` is what the client sent past its line.
    fn handle(&mut self, mut stream: UnixStream, request: Option<Request>, early: &[u8]) {
        let Some(request) = request else {
            respond(&mut stream, &Response::Error("bad request".to_string()));
            return;
        };
        let response = match request {
            Request::Wait => {
                self.waiters.push(stream);
                return;
            }
            Request::Attach { stdin } => {
                respond(&mut stream, &Response::Ok);
                self.attach.add(stream, stdin, early);
                return;
            }
            Request::Start => match self.created.take() {
                None => Response::Error("the container was started already".to_string()),
                Some(created) => match spawn::start(created) {
                    Ok(_) => {
                        self.started = true;
                        Response::Ok
                    }
                    Err(SpawnError::Setup(e)) => Response::SetupFailed {
                        step: e.step,
                        message: e.message,
                    },
                    Err(e) => Response::Error(chain(&e)),
                },
            },
            Request::Kill { signal } => match Signal::try_from(signal) {
                Err(e) => Response::Error(format!("signal {signal}: {e}")),
                // Not reaped yet (we reap only in this loop), so the pid is
                // still the init's.
                Ok(sig) => match kill(self.init, sig) {
                    Ok(()) | Err(Errno::ESRCH) => Response::Ok,
                    Err(e) => Response::Error(format!("kill: {e}")),
                },
            },
            Request::State => Response::State(MonitorState {
                init_pid: self.init.as_raw(),
                started: self.started,
            }),
            Request::ReopenLog => match self.log.reopen() {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error(format!("reopening the log: {e}")),
            },
        };
        respond(&mut stream, &response);
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
