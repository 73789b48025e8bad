//! The image module's errors. The gRPC edge maps each variant to a status
//! code in `cri/error.rs`; messages name the reference, blob or tar entry.

use std::path::PathBuf;

use super::reference::{Digest, ReferenceError};
use crate::state::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("registry {registry} refused the credentials for {repository} (HTTP 401)")]
    Unauthorized {
        registry: String,
        repository: String,
    },
    #[error("registry {registry} denies access to {repository} (HTTP 403)")]
    Forbidden {
        registry: String,
        repository: String,
    },
    #[error("{what} not found in any endpoint of {registry} (tried {tried})")]
    NotFound {
        what: String,
        registry: String,
        tried: String,
    },
    #[error("cannot reach {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("bad authentication challenge or token from {url}: {reason}")]
    Auth { url: String, reason: String },
    #[error("invalid manifest or config {what}: {reason}")]
    BadManifest { what: String, reason: String },
    #[error("no manifest for platform {platform} in the index of {reference}")]
    NoPlatform { platform: String, reference: String },
    #[error("blob {digest} failed verification: {reason}")]
    Verify { digest: Digest, reason: String },
    #[error("layer {digest} cannot be unpacked")]
    Unpack {
        digest: Digest,
        #[source]
        source: super::unpack::UnpackError,
    },
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pull was cancelled (deadline exceeded or caller gone)")]
    Cancelled,
    #[error("a background task of the pull failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot read or write image metadata")]
    Store(#[from] StoreError),
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}
