//! The streaming server behind the URLs that the CRI `Exec`, `Attach` and
//! `PortForward` calls return.
//!
//! A CRI call validates its request, resolves the container or pod through the
//! [`Backend`] and gets a URL `http://ADDR/{exec,attach,portforward}/TOKEN`
//! from [`Service`]. The client (kubelet, crictl) then upgrades an HTTP
//! request on that URL to SPDY/3.1 or WebSocket and speaks the Kubernetes
//! remotecommand or portforward protocol; the token says which request it is.
//!
//! Every session runs in one task per connection, with no task spawned
//! beneath it: when the client goes away or stays idle past the timeout, that
//! task ends and everything it drove (the backend's future, so the exec'd
//! process, and the port connections) is dropped with it.

mod backend;
mod channel;
mod portforward;
mod remotecommand;
mod server;
mod spdy;
mod tokens;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use backend::{
    Backend, BackendError, Duplex, ExecIo, NoContainers, Reader, TerminalSize, Writer,
};

use crate::config::StreamingConfig;
use tokens::TokenStore;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot listen for streaming connections on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("too many streaming requests are waiting for their client (at most {0})")]
    TooManyPending(usize),
    #[error("cannot draw a random token")]
    Random(#[source] std::io::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// An exec request as validated by the CRI layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A port-forward request; an empty `ports` allows any port, as kubelet
/// names the ports only in the streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_id: String,
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }
}

impl StreamRequest {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            StreamRequest::Exec(_) => Kind::Exec,
            StreamRequest::Attach(_) => Kind::Attach,
            StreamRequest::PortForward(_) => Kind::PortForward,
        }
    }
}

/// What every connection handler shares.
pub(crate) struct Shared {
    pub(crate) tokens: TokenStore,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) idle_timeout: Duration,
    pub(crate) stream_creation_timeout: Duration,
    pub(crate) sessions: AtomicUsize,
}

/// Counts a live session for as long as it is held.
pub(crate) struct SessionGuard(Arc<Shared>);

impl SessionGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> SessionGuard {
        shared.sessions.fetch_add(1, Ordering::SeqCst);
        SessionGuard(shared)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The streaming service: issues URLs and serves them.
pub struct Service {
    shared: Arc<Shared>,
    base_url: String,
    address: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

/// How long a client has to open all the streams of a session, as kubelet.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

impl Service {
    /// Binds `config.address` and starts serving.
    pub async fn start(
        config: &StreamingConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Service, StreamError> {
        let shared = Arc::new(Shared {
            tokens: TokenStore::new(
                Duration::from_secs(config.token_ttl_seconds),
                tokens::MAX_PENDING,
            ),
            backend,
            idle_timeout: Duration::from_secs(config.idle_timeout_seconds.max(1)),
            stream_creation_timeout: STREAM_CREATION_TIMEOUT,
            sessions: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind(config.address)
            .await
            .map_err(|source| StreamError::Bind {
                address: config.address,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| StreamError::Bind {
            address: config.address,
            source,
        })?;
        // An unspecified address is reachable on loopback, which is where the
        // clients of a local runtime (kubelet, crictl) are.
        let url_address = match address.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => {
                SocketAddr::from(([127, 0, 0, 1], address.port()))
            }
            ip if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()))
            }
            _ => address,
        };
        let accept = tokio::spawn(server::accept_loop(listener, shared.clone()));
        Ok(Service {
            shared,
            base_url: format!("http://{url_address}"),
            address,
            accept,
        })
    }

    /// The address the server listens on (with the port picked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sessions being served right now; zero once every client is gone.
    pub fn active_sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    pub async fn exec_url(&self, mut request: ExecRequest) -> Result<String, StreamError> {
        request.container_id = self
            .shared
            .backend
            .resolve_container(&request.container_id)
            .await?;
        self.issue(StreamRequest::Exec(request))
    }

    pub async fn attach_url(&self, mut request: AttachRequest) -> Result<String, StreamError> {
        request.container_id = self
            .shared
            .backend
            .resolve_container(&request.container_id)
            .await?;
        self.issue(StreamRequest::Attach(request))
    }

    pub async fn port_forward_url(
        &self,
        mut request: PortForwardRequest,
    ) -> Result<String, StreamError> {
        request.pod_id = self.shared.backend.resolve_pod(&request.pod_id).await?;
        self.issue(StreamRequest::PortForward(request))
    }

    fn issue(&self, request: StreamRequest) -> Result<String, StreamError> {
        let kind = request.kind();
        let token = self.shared.tokens.insert(request)?;
        Ok(format!("{}/{}/{token}", self.base_url, kind.path()))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
