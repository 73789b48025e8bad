//! A streaming backend for the protocol tests: "containers" are the host
//! itself. Exec runs the command as a host process (with a pty for tty),
//! attach echoes stdin to stdout, and port forward dials loopback. It exists
//! only to drive the wire protocols; the real backend is the container
//! service.

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use yonggi::stream::{Backend, BackendError, Duplex, ExecIo, Reader, Writer};

pub struct HostBackend;

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

async fn copy_in(stdin: Option<Reader>, mut to: impl tokio::io::AsyncWrite + Unpin, eof: &[u8]) {
    if let Some(mut stdin) = stdin {
        let _ = tokio::io::copy(&mut stdin, &mut to).await;
        let _ = to.write_all(eof).await;
        let _ = to.shutdown().await;
    }
}

async fn copy_out(from: Option<impl tokio::io::AsyncRead + Unpin>, to: Option<Writer>) {
    if let (Some(mut from), Some(mut to)) = (from, to) {
        let mut buf = vec![0u8; 8192];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

async fn exec_pipes(cmd: &[String], io: ExecIo) -> Result<i32, BackendError> {
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(if io.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BackendError::Start {
            container: "host".into(),
            source: Box::new(e),
        })?;
    let ExecIo {
        stdin: client_in,
        stdout: client_out,
        stderr: client_err,
        ..
    } = io;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let feed = async move {
        if let Some(pipe) = stdin {
            copy_in(client_in, pipe, b"").await;
        }
        std::future::pending::<Infallible>().await
    };
    let run = async move {
        tokio::join!(copy_out(stdout, client_out), copy_out(stderr, client_err));
        child.wait().await
    };
    // The process may exit without reading all of its stdin: stop feeding it then.
    let status = tokio::select! {
        status = run => status,
        never = feed => match never {},
    };
    status.map(exit_code).map_err(BackendError::Io)
}

async fn exec_tty(cmd: &[String], io: ExecIo) -> Result<i32, BackendError> {
    let start_err = |e: std::io::Error| BackendError::Start {
        container: "host".into(),
        source: Box::new(e),
    };
    let pty = nix::pty::openpty(None, None).map_err(|e| start_err(e.into()))?;
    let slave: OwnedFd = pty.slave;
    let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(start_err);
    // setsid -c: a new session with the pty as its controlling terminal,
    // which a shell's job control wants.
    let mut child = Command::new("setsid")
        .arg("-c")
        .args(cmd)
        .stdin(stdio(&slave)?)
        .stdout(stdio(&slave)?)
        .stderr(stdio(&slave)?)
        .kill_on_drop(true)
        .spawn()
        .map_err(start_err)?;
    drop(slave);
    let master = std::fs::File::from(pty.master);
    let resize_fd = master.try_clone().map_err(start_err)?;
    let writer = tokio::fs::File::from_std(master.try_clone().map_err(start_err)?);
    let reader = tokio::fs::File::from_std(master);
    let ExecIo {
        stdin: client_in,
        stdout: client_out,
        resize: sizes,
        ..
    } = io;
    let resize = async move {
        if let Some(mut sizes) = sizes {
            while let Some(size) = sizes.recv().await {
                let winsize = rustix::termios::Winsize {
                    ws_row: size.height,
                    ws_col: size.width,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                let _ = rustix::termios::tcsetwinsize(&resize_fd, winsize);
            }
        }
        std::future::pending::<Infallible>().await
    };
    // ^D is the terminal's end of input: what closing stdin means with a tty.
    let feed = async move {
        copy_in(client_in, writer, b"\x04").await;
        std::future::pending::<Infallible>().await
    };
    let status = tokio::select! {
        (status, ()) = async {
            // Read until the pty reports that the other side closed (EIO).
            tokio::join!(child.wait(), copy_out(Some(reader), client_out))
        } => status,
        never = feed => match never {},
        never = resize => match never {},
    };
    status.map(exit_code).map_err(BackendError::Io)
}

impl Backend for HostBackend {
    fn resolve_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move {
            match id {
                "missing" => Err(BackendError::ContainerNotFound(id.to_string())),
                _ => Ok(format!("{id}-resolved")),
            }
        })
    }

    fn resolve_pod<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move { Ok(id.to_string()) })
    }

    fn exec<'a>(
        &'a self,
        _container_id: &'a str,
        cmd: &'a [String],
        tty: bool,
        io: ExecIo,
    ) -> BoxFuture<'a, Result<i32, BackendError>> {
        Box::pin(async move {
            if tty {
                exec_tty(cmd, io).await
            } else {
                exec_pipes(cmd, io).await
            }
        })
    }

    fn attach<'a>(
        &'a self,
        _container_id: &'a str,
        _tty: bool,
        io: ExecIo,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        // The "container" echoes its stdin until the client ends it.
        Box::pin(async move {
            if let (Some(mut stdin), Some(mut stdout)) = (io.stdin, io.stdout) {
                tokio::io::copy(&mut stdin, &mut stdout)
                    .await
                    .map_err(BackendError::Io)?;
            }
            Ok(())
        })
    }

    fn port_forward<'a>(
        &'a self,
        pod_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Duplex>, BackendError>> {
        Box::pin(async move {
            let conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| BackendError::Connect {
                    pod: pod_id.to_string(),
                    port,
                    source: Box::new(e),
                })?;
            Ok(Box::new(conn) as Box<dyn Duplex>)
        })
    }
}
