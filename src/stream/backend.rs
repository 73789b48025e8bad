//! What the streaming server needs from the rest of the runtime: a way to run a
//! command in a container, to attach to a container's stdio and to reach a
//! port inside a pod. The container service implements [`Backend`]; the
//! server only speaks the wire protocols and never knows how a process is run.

use std::error::Error as StdError;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A byte source handed to the backend (the client's stdin).
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A byte sink handed to the backend (the client's stdout or stderr).
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A bidirectional byte stream to a port inside a pod.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A terminal size change sent by the client (`{"Width":80,"Height":24}` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's side of an exec or attach session.
///
/// `stdin` is `None` when the request did not ask for stdin; its end of file
/// means the client closed stdin (propagate it: close the process's stdin, or
/// with a tty send the terminal's EOF). With `tty`, `stderr` is `None` (the
/// terminal merges both outputs into `stdout`) and `resize` carries size
/// changes, to apply to the pty. Writers apply back-pressure: a client that
/// reads slowly slows the writes down, bounded by the session's idle timeout.
pub struct ExecIo {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// Failures of the backend, shown to the client in the error stream or
/// returned by the CRI call that asked for a URL.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("container {0} is not running")]
    ContainerNotRunning(String),
    #[error("pod sandbox {0} not found")]
    PodNotFound(String),
    #[error("pod sandbox {0} is not ready")]
    PodNotReady(String),
    #[error("cannot start the command in container {container}")]
    Start {
        container: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("cannot attach to container {container}")]
    Attach {
        container: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("cannot connect to port {port} in pod sandbox {pod}")]
    Connect {
        pod: String,
        port: u16,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("i/o with the process failed")]
    Io(#[source] std::io::Error),
}

/// The runtime side of Exec, Attach and PortForward.
///
/// Contract for implementers (the container service):
/// - `resolve_container` / `resolve_pod` are called by the CRI call before a
///   URL is issued: turn an id or unique prefix into the full id, and refuse
///   what cannot be streamed (not found, not running / not ready).
/// - `exec` runs `cmd` in the container like ExecSync does (its namespaces,
///   cgroup, user, env, cwd), with a pty when `tty`, wires `io` to it and
///   resolves to the exit code (128+signal when killed by a signal) once the
///   process has exited **and** its output has been written to the writers.
///   The writers must be dropped by then (the server ends the output streams
///   after the future resolves).
/// - `attach` connects `io` to the running container's stdio (through its
///   monitor) and resolves when the container exits or the client's stdin
///   ends with `stdin_once`; several attach sessions may read the output.
/// - Dropping an `exec` future means the client went away: kill the process
///   and release everything (pipes, pty, tasks). Dropping an `attach` future
///   only detaches; the container keeps running.
/// - `port_forward` dials `localhost:port` inside the pod's network namespace
///   (the host's for a host-network pod) and returns the connection.
pub trait Backend: Send + Sync + 'static {
    fn resolve_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, BackendError>>;
    fn resolve_pod<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, BackendError>>;
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        cmd: &'a [String],
        tty: bool,
        io: ExecIo,
    ) -> BoxFuture<'a, Result<i32, BackendError>>;
    fn attach<'a>(
        &'a self,
        container_id: &'a str,
        tty: bool,
        io: ExecIo,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn port_forward<'a>(
        &'a self,
        pod_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Duplex>, BackendError>>;
}

/// The backend of a daemon that has no container service yet: there is no
/// container or pod to stream to, so every id is unknown. The container
/// service replaces it when it lands.
pub struct NoContainers;

impl Backend for NoContainers {
    fn resolve_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move { Err(BackendError::ContainerNotFound(id.to_string())) })
    }

    fn resolve_pod<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move { Err(BackendError::PodNotFound(id.to_string())) })
    }

    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        _cmd: &'a [String],
        _tty: bool,
        _io: ExecIo,
    ) -> BoxFuture<'a, Result<i32, BackendError>> {
        Box::pin(async move { Err(BackendError::ContainerNotFound(container_id.to_string())) })
    }

    fn attach<'a>(
        &'a self,
        container_id: &'a str,
        _tty: bool,
        _io: ExecIo,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move { Err(BackendError::ContainerNotFound(container_id.to_string())) })
    }

    fn port_forward<'a>(
        &'a self,
        pod_id: &'a str,
        _port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Duplex>, BackendError>> {
        Box::pin(async move { Err(BackendError::PodNotFound(pod_id.to_string())) })
    }
}
