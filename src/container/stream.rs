//! The streaming server's view of containers ([`crate::stream::Backend`]):
//! exec runs `yonggi exec` with the session's streams (a pty when tty is
//! asked), port forwarding dials 127.0.0.1:port inside the pod's network
//! namespace (the host's for host-network pods).

use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use super::{ContainerError, Service};
use crate::pod::PodError;
use crate::stream::{Backend, BackendError, Duplex, ExecIo};

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
        Box::pin(async move { self.0.resolve(id).map_err(|e| container_err(id, e)) })
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
            let (_, path) = self
                .0
                .exec_spec(container_id, cmd.to_vec(), tty)
                .map_err(|e| container_err(container_id, e))?;
            let result = run(&self.0, &path, tty, io).await;
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
        _tty: bool,
        _io: ExecIo,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            Err(BackendError::Attach {
                container: container_id.to_string(),
                source: Box::new(std::io::Error::other("attach is not supported yet")),
            })
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

async fn run(
    service: &Service,
    path: &std::path::Path,
    tty: bool,
    io: ExecIo,
) -> Result<i32, ContainerError> {
    let exe = service.exe()?;
    let io_err = |source| ContainerError::Io {
        action: "run",
        path: exe.clone(),
        source,
    };
    let mut command = tokio::process::Command::new(&exe);
    command.arg("exec").arg(path).kill_on_drop(true);
    let mut master = None;
    if tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| io_err(e.into()))?;
        let replica = std::fs::File::from(pty.slave);
        command
            .stdin(replica.try_clone().map_err(io_err)?)
            .stdout(replica.try_clone().map_err(io_err)?)
            .stderr(replica);
        master = Some(std::fs::File::from(pty.master));
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
    let mut copies = Vec::new();
    if let Some(master) = master {
        let reader = tokio::fs::File::from_std(master.try_clone().map_err(io_err)?);
        let mut writer = tokio::fs::File::from_std(master);
        if let Some(mut stdin) = io.stdin {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stdin, &mut writer).await;
            });
        }
        if let Some(mut out) = io.stdout {
            copies.push(tokio::spawn(async move {
                let mut reader = reader;
                // EIO from the master ends the session once the command exits.
                let _ = tokio::io::copy(&mut reader, &mut out).await;
                let _ = out.shutdown().await;
            }));
        }
    } else {
        if let (Some(mut from), Some(mut to)) = (io.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = to.shutdown().await;
            });
        }
        for (from, to) in [
            (
                child
                    .stdout
                    .take()
                    .map(|r| Box::new(r) as crate::stream::Reader),
                io.stdout,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|r| Box::new(r) as crate::stream::Reader),
                io.stderr,
            ),
        ] {
            if let Some(mut from) = from {
                copies.push(tokio::spawn(async move {
                    match to {
                        Some(mut to) => {
                            let _ = tokio::io::copy(&mut from, &mut to).await;
                            let _ = to.shutdown().await;
                        }
                        None => {
                            let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
                        }
                    }
                }));
            }
        }
    }
    let status = child.wait().await.map_err(io_err)?;
    for c in copies {
        if tty {
            // A pty master may never see EOF while another holder lives.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), c).await;
        } else {
            let _ = c.await;
        }
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1))
}
