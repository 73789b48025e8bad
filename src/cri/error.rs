//! The one place where domain errors become gRPC status codes, and the one
//! wrapper that logs every RPC. kubelet branches on the codes (NotFound on a
//! stop means "already gone"), so a domain error must never collapse into
//! `Internal` by accident: each variant is mapped on purpose.

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Response, Status};

use crate::container::ContainerError;
use crate::image::ImageError;
use crate::net::NetError;
use crate::node::NodeError;
use crate::pod::PodError;
use crate::runtime::cgroup::Fault;
use crate::runtime::seccomp;
use crate::security;
use crate::state::StoreError;
use crate::stream::{BackendError, StreamError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not implemented by yonggi yet")]
    Unimplemented(&'static str),
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Security(#[from] security::Error),
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
}

impl Error {
    fn code(&self) -> Code {
        match self {
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::Node(NodeError::BadPodCidr(_)) => Code::InvalidArgument,
            Error::Node(NodeError::Store(_)) | Error::Store(_) => Code::Internal,
            Error::Image(e) => image_code(e),
            Error::Pod(e) => pod_code(e),
            Error::Stream(e) => stream_code(e),
            Error::Net(e) => net_code(e),
            Error::Container(e) => container_code(e),
            Error::Security(e) => security_code(e),
            Error::Seccomp(e) => seccomp_code(e),
        }
    }
}

fn image_code(err: &ImageError) -> Code {
    match err {
        ImageError::Reference(_) => Code::InvalidArgument,
        ImageError::Unauthorized { .. } => Code::Unauthenticated,
        ImageError::Forbidden { .. } => Code::PermissionDenied,
        ImageError::NotFound { .. } => Code::NotFound,
        ImageError::Http { .. } | ImageError::Status { .. } | ImageError::Auth { .. } => {
            Code::Unavailable
        }
        // The registry served something unusable: not our bug, not the caller's.
        ImageError::BadManifest { .. }
        | ImageError::NoPlatform { .. }
        | ImageError::Unpack { .. } => Code::FailedPrecondition,
        ImageError::Verify { .. } => Code::DataLoss,
        ImageError::Cancelled => Code::Cancelled,
        ImageError::Io { .. } | ImageError::Task(_) | ImageError::Store(_) => Code::Internal,
    }
}

fn pod_code(e: &PodError) -> Code {
    match e {
        PodError::NotFound(_) => Code::NotFound,
        PodError::AmbiguousId { .. } | PodError::InvalidSysctl { .. } => Code::InvalidArgument,
        PodError::NameReserved { .. } => Code::AlreadyExists,
        // The handler names something the runtime does not have, like an
        // unknown image; kubelet reports it on the pod either way.
        PodError::UnknownHandler(_) => Code::NotFound,
        PodError::Network(e) => net_code(e),
        PodError::Cgroup(e) => match e.fault() {
            Fault::Input => Code::InvalidArgument,
            Fault::Unsupported => Code::FailedPrecondition,
            Fault::Host => Code::Internal,
        },
        PodError::Namespace(_)
        | PodError::Holder(_)
        | PodError::Mount(_)
        | PodError::Io { .. }
        | PodError::Task(_)
        | PodError::Store(_) => Code::Internal,
    }
}

fn container_code(e: &ContainerError) -> Code {
    match e {
        ContainerError::NotFound(_) | ContainerError::ImageNotFound(_) => Code::NotFound,
        ContainerError::AmbiguousId { .. }
        | ContainerError::Invalid { .. }
        | ContainerError::NoCommand(_) => Code::InvalidArgument,
        ContainerError::Security(e) => security_code(e),
        ContainerError::Seccomp(e) => seccomp_code(e),
        ContainerError::NameReserved { .. } => Code::AlreadyExists,
        ContainerError::PodNotReady(_) | ContainerError::WrongState { .. } => {
            Code::FailedPrecondition
        }
        ContainerError::HostPropagation { .. } => Code::FailedPrecondition,
        ContainerError::Timeout(_) => Code::DeadlineExceeded,
        ContainerError::Pod(e) => pod_code(e),
        ContainerError::Cgroup(e) => match e.fault() {
            Fault::Input => Code::InvalidArgument,
            Fault::Unsupported => Code::FailedPrecondition,
            Fault::Host => Code::Internal,
        },
        ContainerError::ExecSetup(_)
        | ContainerError::OwnCapabilities(_)
        | ContainerError::Spec(_)
        | ContainerError::Snapshot(_)
        | ContainerError::Monitor(_)
        | ContainerError::Io { .. }
        | ContainerError::Task(_)
        | ContainerError::Store(_) => Code::Internal,
    }
}

fn stream_code(err: &StreamError) -> Code {
    match err {
        StreamError::TooManyPending(_) => Code::ResourceExhausted,
        StreamError::Bind { .. } | StreamError::Random(_) => Code::Internal,
        StreamError::Backend(e) => match e {
            BackendError::ContainerNotFound(_) | BackendError::PodNotFound(_) => Code::NotFound,
            BackendError::ContainerNotRunning(_) | BackendError::PodNotReady(_) => {
                Code::FailedPrecondition
            }
            BackendError::Start { .. }
            | BackendError::Attach { .. }
            | BackendError::Connect { .. }
            | BackendError::Io(_) => Code::Internal,
        },
    }
}

fn net_code(err: &NetError) -> Code {
    match err {
        NetError::InvalidRequest { .. } => Code::InvalidArgument,
        NetError::NotAttached { .. } => Code::NotFound,
        NetError::ConfRead { .. }
        | NetError::ConfInvalid { .. }
        | NetError::PluginNotFound { .. }
        | NetError::HostConflict(_) => Code::FailedPrecondition,
        NetError::PluginTimeout { .. } => Code::DeadlineExceeded,
        NetError::PluginExec { .. }
        | NetError::PluginFailed { .. }
        | NetError::PluginCrashed { .. }
        | NetError::BadResult { .. }
        | NetError::Masquerade { .. }
        | NetError::Loopback { .. }
        | NetError::Cache { .. }
        | NetError::CacheCorrupt { .. } => Code::Internal,
    }
}

fn security_code(err: &security::Error) -> Code {
    use security::Error as E;
    match err {
        E::GroupWithoutUser
        | E::UnknownUser(_)
        | E::UnknownGroup(_)
        | E::InvalidUser { .. }
        | E::InvalidId { .. }
        | E::InvalidPath(_)
        | E::UnknownCapability(_)
        | E::AmbientOutsideBounding(_)
        | E::MacUnavailable { .. }
        | E::InvalidProfile(_)
        | E::InvalidMapping(_)
        | E::UnsupportedUsernsMode(_) => Code::InvalidArgument,
        // The node cannot grant it: not the request's fault alone.
        E::CapabilityUnavailable(_) => Code::FailedPrecondition,
        E::ReadImageFile { .. } => Code::Internal,
    }
}

fn seccomp_code(err: &seccomp::Error) -> Code {
    use seccomp::Error as E;
    match err {
        E::RelativePath { .. }
        | E::Parse { .. }
        | E::UnknownSyscall(_)
        | E::UnsupportedAction(_)
        | E::UnknownArch(_)
        | E::Invalid(_)
        | E::Compile { .. } => Code::InvalidArgument,
        // The node lacks the profile file kubelet named.
        E::Read { .. } => Code::FailedPrecondition,
        E::Export(_) | E::Kernel(_) => Code::Internal,
    }
}

/// The error and its causes, outermost first: `a: b: c`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        Status::new(err.code(), chain(&err))
    }
}

/// Runs one RPC: times it, logs it (debug on success, warn with the error
/// chain on failure) and maps the domain error to its status code.
pub(crate) async fn observe<T, F>(method: &'static str, work: F) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, Error>>,
{
    let start = Instant::now();
    let result = work.await;
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    match result {
        Ok(reply) => {
            tracing::debug!(method, duration_us = micros, code = "OK", "rpc");
            Ok(Response::new(reply))
        }
        Err(err) => {
            let status = Status::from(err);
            tracing::warn!(
                method,
                duration_us = micros,
                code = ?status.code(),
                error = status.message(),
                "rpc failed"
            );
            Err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_mapped_on_purpose() {
        let status = Status::from(Error::Unimplemented("RunPodSandbox"));
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("RunPodSandbox"));
        let status = Status::from(Error::Node(NodeError::BadPodCidr("x".into())));
        assert_eq!(status.code(), Code::InvalidArgument);
        let status = Status::from(Error::Net(NetError::PluginNotFound {
            plugin: "bridge".into(),
            dirs: "/opt/cni/bin".into(),
        }));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("bridge"));
    }

    #[test]
    fn chain_includes_causes() {
        let io = std::io::Error::other("disk on fire");
        let err = crate::config::ConfigError::Read {
            path: "/etc/x.toml".into(),
            source: io,
        };
        assert_eq!(
            chain(&err),
            "cannot read config file /etc/x.toml: disk on fire"
        );
    }
}
