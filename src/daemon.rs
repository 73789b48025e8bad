//! `yonggi serve`: owns the socket and the process lifetime.
//!
//! Start-up: create the roots, take the instance lock, open the store, bind
//! the socket. Shutdown (SIGTERM/SIGINT): stop accepting, give in-flight RPCs
//! `shutdown_grace_seconds`, remove the socket, exit 0. Containers are never
//! stopped here: they belong to their monitors and outlive the daemon.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::cri::{self, Services};
use crate::image::{self, ImageError};
use crate::node::{Node, NodeError};
use crate::state::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open lock file {path}")]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another yonggi instance owns {socket} (lock {lock} is held{holder})")]
    AlreadyRunning {
        socket: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("cannot take lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot remove stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot recover pod sandboxes")]
    Pods(#[from] crate::pod::PodError),
    #[error("cannot find the host's cgroups")]
    Cgroups(#[from] crate::runtime::cgroup::CgroupError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
    #[error("cannot start pod networking")]
    Net(#[from] crate::net::NetError),
    #[error("the gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// Holds the instance lock for as long as it lives.
struct InstanceLock {
    _lock: Flock<File>,
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes an exclusive flock next to the socket. The kernel drops it when the
/// process dies, however it dies, so a crash never leaves a stale lock.
fn take_lock(socket: &Path) -> Result<InstanceLock, DaemonError> {
    let path = lock_path(socket);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| DaemonError::LockFile {
            path: path.clone(),
            source,
        })?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|pid| pid.trim().to_string())
                .filter(|pid| !pid.is_empty())
                .map(|pid| format!(" by pid {pid}"))
                .unwrap_or_default();
            return Err(DaemonError::AlreadyRunning {
                socket: socket.to_path_buf(),
                lock: path,
                holder,
            });
        }
        Err((_, source)) => return Err(DaemonError::Lock { path, source }),
    };
    // The pid is for the operator's error message only; the flock is the truth.
    let _ = lock.set_len(0);
    let _ = write!(lock, "{}", std::process::id());
    Ok(InstanceLock { _lock: lock })
}

fn create_dir(path: &Path) -> Result<(), DaemonError> {
    std::fs::create_dir_all(path).map_err(|source| DaemonError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Binds the socket, replacing one left by a crashed instance (safe: we hold the lock).
fn bind(socket: &Path) -> Result<UnixListener, DaemonError> {
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(path = %socket.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DaemonError::RemoveStale {
                path: socket.to_path_buf(),
                source,
            });
        }
    }
    let bind_err = |source| DaemonError::Bind {
        path: socket.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(socket).map_err(bind_err)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    Ok(listener)
}

pub async fn serve(config: Config) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    create_dir(&config.root)?;
    create_dir(&config.state_dir)?;
    if let Some(parent) = config.socket.parent() {
        create_dir(parent)?;
    }
    let _lock = take_lock(&config.socket)?;
    let store = Arc::new(Store::open(&config.root)?);
    let node = Arc::new(Node::new(config.clone(), store.clone())?);
    let net = Arc::new(crate::net::Service::new(config.clone(), node.clone())?);
    let released = net.release_stale().await?;
    if !released.is_empty() {
        tracing::info!(pods = ?released, "released the networks of pods whose netns is gone");
    }
    let stream =
        crate::stream::Service::start(&config.streaming, Arc::new(crate::stream::NoContainers))
            .await?;
    tracing::info!(address = %stream.address(), "streaming server listening");
    let cgroups = crate::runtime::cgroup::Cgroups::detect()?;
    let pods = Arc::new(
        crate::pod::Service::new(config.clone(), store.clone(), net.clone(), cgroups).await?,
    );
    let images = image::Service::new(config.clone(), store.clone())?;
    let services = Services {
        node,
        images,
        pods,
        net,
        stream: Arc::new(stream),
    };

    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let listener = bind(&config.socket)?;
    let (runtime, image) = cri::servers(services);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(runtime)
            .add_service(image)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    tracing::info!(
        socket = %config.socket.display(),
        root = %config.root.display(),
        state_dir = %config.state_dir.display(),
        version = crate::node::RUNTIME_VERSION,
        "yonggi is serving CRI v1"
    );

    let result = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); None }
        finished = &mut server => Some(finished),
    };
    let result = match result {
        Some(finished) => finished,
        None => {
            let _ = stop_tx.send(());
            let grace = Duration::from_secs(config.shutdown_grace_seconds);
            match tokio::time::timeout(grace, &mut server).await {
                Ok(finished) => finished,
                Err(_) => {
                    tracing::warn!(
                        ?grace,
                        "in-flight RPCs did not finish in time; exiting anyway"
                    );
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    if let Err(e) = std::fs::remove_file(&config.socket) {
        tracing::warn!(path = %config.socket.display(), error = %e, "cannot remove socket");
    }
    match result {
        Ok(served) => served?,
        Err(join) => tracing::error!(error = %join, "gRPC server task ended abnormally"),
    }
    tracing::info!("yonggi stopped");
    Ok(())
}
