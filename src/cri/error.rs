//! The one place where domain errors become gRPC status codes, and the one
//! wrapper that logs every RPC. kubelet branches on the codes (NotFound on a
//! stop means "already gone"), so a domain error must never collapse into
//! `Internal` by accident: each variant is mapped on purpose.

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Response, Status};

use crate::image::ImageError;
use crate::node::NodeError;
use crate::state::StoreError;

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
}

impl Error {
    fn code(&self) -> Code {
        match self {
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::Node(NodeError::BadPodCidr(_)) => Code::InvalidArgument,
            Error::Node(NodeError::Store(_)) | Error::Store(_) => Code::Internal,
            Error::Image(e) => image_code(e),
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
