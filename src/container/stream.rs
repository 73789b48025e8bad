//! The streaming server's view of containers ([`crate::stream::Backend`]):
//! exec runs `yonggi exec` with the session's streams (a pty when tty is
//! asked, sized by the client's resizes), attach is a session on the
//! container's monitor (`attach.rs` here), port forwarding dials
//! 127.0.0.1:port inside the pod's network namespace (the host's for
//! host-network pods).
//!
//! Everything a session drives lives in its one future, no task is spawned:
//! when the streaming server drops it (the client went away, or idled), the
//! exec'd command is stopped and the pipes, pty and monitor connection close.

use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

mod attach;

use super::{ContainerError, Service, State};
use crate::pod::PodError;
use crate::stream::{Backend, BackendError, Duplex, ExecIo, Reader, TerminalSize, Writer};

pub struct StreamBackend(pub Arc<Service>);

fn container_err(id: &str, e: ContainerError) -> BackendError {
    match e {
        ContainerError::NotFound(_) => BackendError::ContainerNotFound(id.to_string()),
        ContainerError::WrongState { .. } => BackendError::ContainerNotRunning(id.to_string()),
        e => BackendError::Start {
            container: id.to_string(),
            source: Box::new(e),
        },
    }
}

impl Backend for StreamBackend {
    fn resolve_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move {
            let c = self.0.get(id).map_err(|e| container_err(id, e))?;
            // Nothing to exec in or attach to otherwise.
            if c.state() != State::Running {
                return Err(BackendError::ContainerNotRunning(c.id));
            }
            Ok(c.id)
        })
    }

    fn resolve_pod<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move {
            self.0
                .pods
                .resolve(id)
                .map_err(|_| BackendError::PodNotFound(id.to_string()))
        })
    }

    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        cmd: &'a [String],
        tty: bool,
        io: ExecIo,
    ) -> BoxFuture<'a, Result<i32, BackendError>> {
        Box::pin(async move {
            let (c, path) = self
                .0
                .exec_spec(container_id, cmd.to_vec(), tty)
                .map_err(|e| container_err(container_id, e))?;
            let result = run(&self.0, &path, tty.then_some(c.init_pid), io).await;
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("report"));
            result.map_err(|source| BackendError::Start {
                container: container_id.to_string(),
                source: Box::new(source),
            })
        })
    }

    fn attach<'a>(
        &'a self,
        container_id: &'a str,
        tty: bool,
        io: ExecIo,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let c = self
                .0
                .get(container_id)
                .map_err(|e| container_err(container_id, e))?;
            if c.state() != State::Running {
                return Err(BackendError::ContainerNotRunning(c.id));
            }
            let attach_err =
                |source: Box<dyn std::error::Error + Send + Sync>| BackendError::Attach {
                    container: c.id.clone(),
                    source,
                };
            let mut io = io;
            // A container made without stdin has none to feed; its output
            // streams all the same.
            if !c.spec.stdin {
                io.stdin = None;
            }
            let dir = c.dir.clone();
            let with_stdin = io.stdin.is_some();
            let conn =
                tokio::task::spawn_blocking(move || crate::monitor::attach(&dir, with_stdin))
                    .await
                    .map_err(|e| attach_err(Box::new(e)))?
                    .map_err(|e| attach_err(Box::new(e)))?;
            let Some(conn) = conn else {
                // It exited in the meantime: nothing more will come.
                return Ok(());
            };
            let options = attach::Options {
                tty,
                stdin_once: c.spec.stdin_once,
            };
            attach::session(conn, io, options)
                .await
                .map_err(|e| attach_err(Box::new(e)))
        })
    }

    fn port_forward<'a>(
        &'a self,
        pod_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Duplex>, BackendError>> {
        Box::pin(async move {
            let pod = self.0.pods.get(pod_id).map_err(|e| match e {
                PodError::NotFound(_) => BackendError::PodNotFound(pod_id.to_string()),
                _ => BackendError::PodNotFound(pod_id.to_string()),
            })?;
            if !pod.is_ready() {
                return Err(BackendError::PodNotReady(pod.id));
            }
            let netns = pod.netns_path();
            let connect = move || -> std::io::Result<std::net::TcpStream> {
                // A throwaway thread enters the namespace: a socket stays in
                // the namespace it was made in, the thread then ends.
                std::thread::spawn(move || {
                    if let Some(ns) = netns {
                        let file = std::fs::File::open(ns)?;
                        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(std::io::Error::from)?;
                    }
                    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
                    stream.set_nonblocking(true)?;
                    Ok(stream)
                })
                .join()
                .map_err(|_| std::io::Error::other("the connecting thread panicked"))?
            };
            let conn_err = |source: std::io::Error| BackendError::Connect {
                pod: pod_id.to_string(),
                port,
                source: Box::new(source),
            };
            let std_stream = tokio::task::spawn_blocking(connect)
                .await
                .map_err(|e| conn_err(std::io::Error::other(e)))?
                .map_err(conn_err)?;
            let stream = tokio::net::TcpStream::from_std(std_stream).map_err(conn_err)?;
            Ok(Box::new(stream) as Box<dyn Duplex>)
        })
    }
}

/// Stops the exec'd command when the session is dropped before it ended:
/// SIGTERM makes the `yonggi exec` helper kill the command's whole session
/// and reap it. Dropped before the `Child`, so the pid is not reaped yet.
struct StopOnDrop(Option<u32>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }
}

/// How long a pty's output is read once the command exited: a process it
/// left in the background may hold the terminal open for good.
const PTY_DRAIN: Duration = Duration::from_millis(500);
/// The terminal's end-of-file character: what closing stdin means on a pty.
const VEOF: u8 = 0x04;

/// Runs the exec; with `tty_of` (the container's init pid) on a pty.
async fn run(
    service: &Service,
    path: &std::path::Path,
    tty_of: Option<i32>,
    io: ExecIo,
) -> Result<i32, ContainerError> {
    let exe = service.exe()?;
    let io_err = |source| ContainerError::Io {
        action: "run",
        path: exe.clone(),
        source,
    };
    let mut command = tokio::process::Command::new(&exe);
    command.arg("exec").arg(path);
    let mut master = None;
    if let Some(init_pid) = tty_of {
        let (pty_master, replica) = match container_pty(init_pid) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "no pty in the container's devpts; using the host's");
                let pty = nix::pty::openpty(None, None).map_err(|e| io_err(e.into()))?;
                (pty.master, pty.slave)
            }
        };
        let replica = std::fs::File::from(replica);
        command
            .stdin(replica.try_clone().map_err(io_err)?)
            .stdout(replica.try_clone().map_err(io_err)?)
            .stderr(replica);
        master = Some(pty_master);
    } else {
        command
            .stdin(if io.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    let mut child = command.spawn().map_err(io_err)?;
    // The parent's copies of the replica are gone with `command`.
    drop(command);
    let mut stop = StopOnDrop(child.id());
    let (child_in, child_out, child_err) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let ExecIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let status = match master {
        Some(master) => {
            let pty = Pty::new(master).map_err(io_err)?;
            let session = async {
                let output = copy_out(Some(pty.reader), stdout);
                tokio::pin!(output);
                let (status, done) = tokio::select! {
                    status = child.wait() => (status, false),
                    () = &mut output => (child.wait().await, true),
                };
                if !done {
                    let _ = tokio::time::timeout(PTY_DRAIN, output).await;
                }
                status
            };
            tokio::select! {
                status = session => status,
                never = feed(stdin, Some(pty.writer), Some(VEOF)) => match never {},
                never = apply_sizes(resize, pty.sizer) => match never {},
            }
        }
        None => {
            let session = async {
                let output = async {
                    tokio::join!(copy_out(child_out, stdout), copy_out(child_err, stderr))
                };
                let (status, _) = tokio::join!(child.wait(), output);
                status
            };
            tokio::select! {
                status = session => status,
                never = feed(stdin, child_in, None) => match never {},
            }
        }
    }
    .map_err(|source| ContainerError::Io {
        action: "wait for",
        path: exe.clone(),
        source,
    })?;
    stop.0 = None;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1))
}

/// A pty of the container's own devpts (through its `/dev/ptmx`, resolved
/// inside its root), so that the command finds its terminal under
/// `/dev/pts` as it would under runc. Returns (master, replica).
fn container_pty(init_pid: i32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let root = std::fs::File::open(format!("/proc/{init_pid}/root"))?;
    crate::runtime::pty::open_in_root(root.as_fd())
}

/// The master side of an exec's pty: non-blocking, read and written through
/// the reactor, and one more descriptor for resizes.
struct Pty {
    reader: tokio::net::unix::pipe::Receiver,
    writer: tokio::net::unix::pipe::Sender,
    sizer: OwnedFd,
}

impl Pty {
    fn new(master: OwnedFd) -> std::io::Result<Pty> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = OFlag::from_bits_truncate(fcntl(&master, FcntlArg::F_GETFL)?);
        fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let file = std::fs::File::from(master.try_clone()?);
        // A pty master polls like a pipe end; tokio's pipe types only check
        // the file type, which is why the unchecked constructors are used.
        let reader = tokio::net::unix::pipe::Receiver::from_file_unchecked(file.try_clone()?)?;
        let writer = tokio::net::unix::pipe::Sender::from_file_unchecked(file)?;
        Ok(Pty {
            reader,
            writer,
            sizer: master,
        })
    }
}

/// Copies the process's output to the client until either ends.
async fn copy_out(from: Option<impl AsyncRead + Unpin>, to: Option<Writer>) {
    let Some(mut from) = from else {
        return;
    };
    match to {
        Some(mut to) => {
            // Errors end the copy: EIO from a pty master once the command
            // and its children closed the terminal, or the client gone.
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        }
        // Not asked for: read and drop, so the process never blocks on it.
        None => {
            let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
        }
    }
}

/// Feeds the client's stdin to the process; at its end closes the process's
/// stdin (a pipe), or writes `eof` (a pty). Never resolves: the process
/// decides when the session ends.
async fn feed(
    from: Option<Reader>,
    to: Option<impl AsyncWrite + Unpin>,
    eof: Option<u8>,
) -> Infallible {
    if let (Some(mut from), Some(mut to)) = (from, to) {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        if let Some(eof) = eof {
            let _ = to.write_all(&[eof]).await;
        }
        let _ = to.shutdown().await;
        drop(to);
    }
    std::future::pending().await
}

/// Applies the client's terminal sizes to the pty. Never resolves.
async fn apply_sizes(sizes: Option<mpsc::Receiver<TerminalSize>>, pty: OwnedFd) -> Infallible {
    if let Some(mut sizes) = sizes {
        while let Some(size) = sizes.recv().await {
            set_size(&pty, size);
        }
    }
    std::future::pending().await
}

pub(super) fn set_size(pty: &OwnedFd, size: TerminalSize) {
    let winsize = rustix::termios::Winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    if let Err(e) = rustix::termios::tcsetwinsize(pty, winsize) {
        tracing::debug!(error = %e, "cannot resize the exec's terminal");
    }
}
