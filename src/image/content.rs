//! The content store: blobs by digest, verified before they are committed.
//!
//! Layout under `<root>/images` (the image filesystem `ImageFsInfo` reports):
//!
//! | path                      | what                                              |
//! |---------------------------|---------------------------------------------------|
//! | `blobs/sha256/<hex>`      | committed blobs: manifests, configs, layers       |
//! | `layers/<chain hex>/`     | one unpacked layer (its diff only), keyed by chain ID |
//! | `ingest/`                 | blobs and layers being written; emptied at start  |
//! | `trash/`                  | what garbage collection is deleting; emptied at start |
//!
//! A blob is written to `ingest/`, hashed while it streams, checked against
//! the expected digest and size, fsynced, then renamed into `blobs/`: a name
//! under `blobs/` always holds exactly the bytes its digest says. A layer is
//! unpacked under `ingest/` and renamed into `layers/` only when complete and
//! its diff ID matched, so a killed pull never leaves half a layer there.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest as _;

use super::error::ImageError;
use super::reference::Digest;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.join("images"),
        }
    }

    pub(crate) fn blobs(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub(crate) fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }

    pub(crate) fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(crate) fn layer(&self, chain_id: &Digest) -> PathBuf {
        self.layers().join(chain_id.hex())
    }

    pub(crate) fn ingest(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(crate) fn trash(&self) -> PathBuf {
        self.root.join("trash")
    }

    /// A fresh, unused name under `ingest/`.
    pub(crate) fn temp(&self, what: &str) -> PathBuf {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.ingest().join(format!(
            "{what}-{}-{seq}-{}",
            std::process::id(),
            rand::random::<u32>()
        ))
    }

    /// Creates the directories and throws away what a killed pull or an
    /// interrupted collection left behind.
    pub(crate) fn prepare(&self) -> Result<(), ImageError> {
        for dir in [self.ingest(), self.trash()] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(path = %dir.display(), "removed leftovers of an interrupted pull")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io(&dir)(e)),
            }
        }
        for dir in [self.blobs(), self.layers(), self.ingest(), self.trash()] {
            std::fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        }
        Ok(())
    }

    /// A committed blob of the expected size (the digest is the file name,
    /// and only verified bytes are ever renamed there).
    pub(crate) fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        std::fs::metadata(self.blob(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }
}

/// Checks a stream of bytes against an expected digest and size as it passes.
pub(crate) struct Verifier {
    digest: Digest,
    size: u64,
    seen: u64,
    hasher: sha2::Sha256,
}

impl Verifier {
    pub(crate) fn new(digest: &Digest, size: u64) -> Verifier {
        Verifier {
            digest: digest.clone(),
            size,
            seen: 0,
            hasher: sha2::Sha256::new(),
        }
    }

    /// Fails as soon as more bytes arrive than the descriptor announced, so a
    /// hostile registry cannot fill the disk.
    pub(crate) fn update(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.seen += chunk.len() as u64;
        if self.seen > self.size {
            return Err(self.fail(format!("more than the expected {} bytes", self.size)));
        }
        self.hasher.update(chunk);
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<(), ImageError> {
        if self.seen != self.size {
            return Err(self.fail(format!("got {} bytes, expected {}", self.seen, self.size)));
        }
        let got = Digest::from_sha256(&self.hasher.clone().finalize());
        if got != self.digest {
            return Err(self.fail(format!("content hashes to {got}")));
        }
        Ok(())
    }

    fn fail(&self, reason: String) -> ImageError {
        ImageError::Verify {
            digest: self.digest.clone(),
            reason,
        }
    }
}

/// A file under `ingest/`, removed on drop unless committed.
pub(crate) struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    pub(crate) fn new(path: PathBuf) -> TempPath {
        TempPath { path: Some(path) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Renames into place (replacing what is there) and syncs the directory.
    pub(crate) fn commit(mut self, dest: &Path) -> Result<(), ImageError> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        if let Err(e) = std::fs::rename(&path, dest) {
            remove_any(&path);
            return Err(ImageError::io(dest)(e));
        }
        if let Some(parent) = dest.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(ImageError::io(parent))?;
        }
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_any(&path);
        }
    }
}

pub(crate) fn remove_any(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary file");
    }
}

/// A blob being written: hashed and checked as chunks arrive.
pub(crate) struct BlobWriter {
    temp: TempPath,
    file: std::io::BufWriter<File>,
    verifier: Verifier,
    dest: PathBuf,
}

impl BlobWriter {
    pub(crate) fn create(
        layout: &Layout,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobWriter, ImageError> {
        let path = layout.temp(&format!("blob-{}", digest.hex()));
        let file = File::create(&path).map_err(ImageError::io(&path))?;
        Ok(BlobWriter {
            temp: TempPath::new(path),
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            verifier: Verifier::new(digest, size),
            dest: layout.blob(digest),
        })
    }

    pub(crate) fn write(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.verifier.update(chunk)?;
        self.file
            .write_all(chunk)
            .map_err(ImageError::io(self.temp.path()))
    }

    /// Verifies, fsyncs and renames into `blobs/`.
    pub(crate) fn commit(self) -> Result<PathBuf, ImageError> {
        let BlobWriter {
            temp,
            file,
            verifier,
            dest,
        } = self;
        verifier.finish()?;
        let file = file
            .into_inner()
            .map_err(|e| ImageError::io(temp.path())(e.into_error()))?;
        file.sync_all().map_err(ImageError::io(temp.path()))?;
        drop(file);
        temp.commit(&dest)?;
        Ok(dest)
    }
}

/// Writes bytes already in memory (manifests, configs) through the same checks.
pub(crate) fn write_blob(layout: &Layout, digest: &Digest, data: &[u8]) -> Result<(), ImageError> {
    if layout.has_blob(digest, data.len() as u64) {
        return Ok(());
    }
    let mut writer = BlobWriter::create(layout, digest, data.len() as u64)?;
    writer.write(data)?;
    writer.commit().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        layout.prepare().expect("prepare");
        (dir, layout)
    }

    #[test]
    fn verifier_accepts_exact_content() {
        let data = b"hello layer";
        let mut v = Verifier::new(&Digest::of(data), data.len() as u64);
        v.update(&data[..4]).expect("chunk");
        v.update(&data[4..]).expect("chunk");
        v.finish().expect("verified");
    }

    #[test]
    fn verifier_rejects_tampered_short_and_long_content() {
        let data = b"hello layer";
        let digest = Digest::of(data);
        let mut v = Verifier::new(&digest, data.len() as u64);
        v.update(b"hello lAyer").expect("same size");
        assert!(matches!(v.finish(), Err(ImageError::Verify { .. })));

        let mut v = Verifier::new(&digest, data.len() as u64);
        v.update(b"hello").expect("short");
        assert!(matches!(v.finish(), Err(ImageError::Verify { .. })));

        let mut v = Verifier::new(&digest, data.len() as u64);
        v.update(b"hello layer").expect("exact");
        assert!(matches!(v.update(b"!"), Err(ImageError::Verify { .. })));
    }

    #[test]
    fn tampered_blob_is_never_committed() {
        let (_dir, layout) = layout();
        let digest = Digest::of(b"good");
        let mut w = BlobWriter::create(&layout, &digest, 4).expect("create");
        w.write(b"evil").expect("write");
        assert!(w.commit().is_err());
        assert!(!layout.blob(&digest).exists());
        assert_eq!(
            std::fs::read_dir(layout.ingest()).expect("ingest").count(),
            0
        );

        write_blob(&layout, &digest, b"good").expect("good blob");
        assert_eq!(std::fs::read(layout.blob(&digest)).expect("blob"), b"good");
    }

    #[test]
    fn prepare_cleans_leftovers_of_a_killed_pull() {
        let (_dir, layout) = layout();
        let leftover = layout.temp("blob");
        std::fs::write(&leftover, b"half").expect("leftover");
        std::fs::create_dir_all(layout.trash().join("x/y")).expect("trash");
        layout.prepare().expect("prepare again");
        assert!(!leftover.exists());
        assert_eq!(std::fs::read_dir(layout.trash()).expect("trash").count(), 0);
    }
}
