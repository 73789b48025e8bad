//! Test and operations tooling, not part of the runtime: builds the
//! busybox-based test images in memory and pushes them to a registry with
//! the OCI distribution push API.
//!
//! The integration tests use it through `tests/support/registry.rs`, and
//! `yonggi-testimages push` publishes the same images for critest
//! (`hack/critest.sh`). Building is deterministic (fixed mtimes and owners,
//! no timestamps in configs) so an image has the same digest on every run,
//! and the expensive pieces are cached in-process.
//!
//! - [`layer`]: tar layers entry by entry, hostile entries included;
//!   uncompressed, gzip or zstd.
//! - [`image`]: image configs, manifests (OCI or Docker schema 2), indexes.
//! - [`rootfs`]: the busybox base layer taken from the host.
//! - [`programs`]: `pgrep`/`ipcs` scripts, an nginx stand-in, the setuid
//!   `nnp` assembled from source.
//! - [`catalog`]: the named test images (`yonggi-test/...`).
//! - [`critest`]: the same under critest's repository paths, plus its
//!   nginx and nonewprivs.
//! - [`push`]: pushing blobs, manifests and indexes.

pub mod catalog;
pub mod critest;
pub mod image;
pub mod layer;
pub mod programs;
pub mod push;
pub mod rootfs;

use std::path::PathBuf;

pub use catalog::{Published, Set, TestImage, publish};
pub use image::{Artifact, Image, ImageBuilder, ImageConfig, Index, ManifestFormat, Platform};
pub use layer::{Compression, Entry, Kind, Layer, LayerBuilder};
pub use push::{Auth, Pusher};

/// Media types of everything the builder writes.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// Content addressed by its digest, as a registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub bytes: bytes::Bytes,
}

impl Blob {
    pub fn new(media_type: &'static str, bytes: impl Into<bytes::Bytes>) -> Blob {
        let bytes = bytes.into();
        Blob {
            media_type,
            digest: layer::sha256_digest(&bytes),
            bytes,
        }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing a tar stream")]
    Tar(#[source] std::io::Error),
    #[error("compressing a layer")]
    Compress(#[source] std::io::Error),
    #[error("reading {path} from the host")]
    ReadHost {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {command}")]
    Command {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    CommandFailed { command: String, stderr: String },
    #[error("the Docker schema 2 format has no media type for {0:?} layers")]
    NoDockerMediaType(Compression),
    #[error("serializing {what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("bad image reference {0}")]
    Reference(String, #[source] oci_client::ParseError),
    #[error("pushing {what} to {reference}")]
    Push {
        what: String,
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
}
