//! Images: references, registry pulls, the content store, layer unpacking and
//! image metadata. Knows nothing of pods, containers or protobuf.
//!
//! API for the container service:
//! - [`Service::resolve`] finds an image by any reference form kubelet uses;
//!   [`Image::layer_dirs`] gives its unpacked layers, lowest first, and
//!   [`Image::config`] what the image runs (user, env, entrypoint, cmd, ...).
//! - [`Service::lease`] / [`Service::release`]: a container keeps the layers it
//!   was created from alive. `RemoveImage` removes the image's names and
//!   record at once, but its layers stay on disk until no lease names them
//!   (containerd's lease model, rather than refusing the removal).

mod content;
mod error;
mod manifest;
mod pull;
mod record;
mod reference;
mod registry;
mod unpack;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

pub use error::ImageError;
pub use manifest::RunConfig;
pub use record::Image;
pub use reference::{Digest, Reference, ReferenceError};
pub use registry::Auth;
pub use unpack::UnpackError;

use crate::config::Config;
use crate::state::{Bucket, Store};
use content::Layout;

/// Filesystem usage of the image store, for `ImageFsInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// What a lease holder (a container) keeps alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    image_id: String,
    chain_ids: Vec<String>,
}

/// The image service. Cloning is cheap.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: Arc<Config>,
    store: Arc<Store>,
    layout: Layout,
    client: reqwest::Client,
    locks: KeyedLocks,
    inflight: Arc<Inflight>,
    /// Serialises read-modify-write of image records (a tag moving between images).
    records: Mutex<()>,
}

/// Per-key async locks: the single-flight of blob downloads and layer unpacks.
#[derive(Default)]
struct KeyedLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, lock| lock.strong_count() > 0);
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_string(), Arc::downgrade(&lock));
        lock
    }
}

/// Blobs and layers running pulls are writing: collection leaves them alone.
#[derive(Default)]
struct Inflight(Mutex<HashMap<String, usize>>);

impl Inflight {
    fn lease(self: &Arc<Self>, keys: &[String]) -> Lease {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            *map.entry(key.clone()).or_default() += 1;
        }
        Lease {
            inflight: self.clone(),
            keys: keys.to_vec(),
        }
    }
}

pub(crate) struct Lease {
    inflight: Arc<Inflight>,
    keys: Vec<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut map = self.inflight.0.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(count) = map.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

impl Service {
    /// Prepares the image store under `<root>/images`: removes what a killed
    /// pull left and collects unreferenced blobs and layers.
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> Result<Service, ImageError> {
        let layout = Layout::new(&config.root);
        layout.prepare()?;
        let inner = Arc::new(Inner {
            config,
            store,
            layout,
            client: registry::client(),
            locks: KeyedLocks::default(),
            inflight: Arc::default(),
            records: Mutex::new(()),
        });
        inner.collect()?;
        Ok(Service { inner })
    }

    /// Pulls `reference` and returns the image ID (`sha256:` of the config).
    /// Dropping the future cancels the pull; it then commits nothing.
    pub async fn pull(&self, reference: &str, auth: Auth) -> Result<String, ImageError> {
        let reference = Reference::parse(reference)?;
        let cancel = Arc::new(pull::Cancel::default());
        let _on_drop = pull::CancelOnDrop(cancel.clone());
        let task = tokio::spawn(pull::pull(self.inner.clone(), reference, auth, cancel));
        task.await.map_err(ImageError::Task)?
    }

    /// The image `reference` names (name, name:tag, name@digest, ID, ID prefix).
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let images = self.list()?;
        Ok(record::find(&images, reference).cloned())
    }

    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        self.inner.list()
    }

    /// The image config document as pulled (for verbose status).
    pub fn config_document(&self, image: &Image) -> Result<serde_json::Value, ImageError> {
        let digest = Digest::parse(&image.id).ok_or_else(|| ImageError::BadManifest {
            what: image.id.clone(),
            reason: "image ID is not a sha256 digest".to_string(),
        })?;
        let path = self.inner.layout.blob(&digest);
        let body = std::fs::read(&path).map_err(ImageError::io(&path))?;
        serde_json::from_slice(&body).map_err(|e| ImageError::BadManifest {
            what: image.id.clone(),
            reason: e.to_string(),
        })
    }

    /// Removes the image `reference` names, with all its tags; absent is fine.
    /// Layers still leased by containers stay on disk until released.
    pub async fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let inner = self.inner.clone();
        let reference = reference.to_string();
        tokio::task::spawn_blocking(move || {
            {
                let _guard = inner.records.lock().unwrap_or_else(|e| e.into_inner());
                let images = inner.list()?;
                let Some(image) = record::find(&images, &reference) else {
                    return Ok(());
                };
                inner.store.delete(Bucket::Images, &image.id)?;
                tracing::info!(image = %image.id, tags = ?image.repo_tags, "image removed");
            }
            inner.collect()
        })
        .await
        .map_err(ImageError::Task)?
    }

    /// Bytes and inodes used by the image store.
    pub async fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        let root = self.inner.layout.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut seen = HashSet::new();
            let (bytes, inodes) = usage(&root, &mut seen)?;
            Ok(FsUsage {
                mountpoint: root,
                used_bytes: bytes,
                inodes_used: inodes,
            })
        })
        .await
        .map_err(ImageError::Task)?
    }

    /// Keeps `image`'s layers on disk for `holder` (a container ID) until
    /// [`Service::release`], even if the image is removed. Durable.
    pub fn lease(&self, holder: &str, image: &Image) -> Result<(), ImageError> {
        let record = LeaseRecord {
            image_id: image.id.clone(),
            chain_ids: image.chain_ids.clone(),
        };
        self.inner.store.put(Bucket::ImageLeases, holder, &record)?;
        Ok(())
    }

    /// Drops `holder`'s lease and collects layers nothing uses any more.
    pub async fn release(&self, holder: &str) -> Result<(), ImageError> {
        self.inner.store.delete(Bucket::ImageLeases, holder)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.collect())
            .await
            .map_err(ImageError::Task)?
    }
}

impl Inner {
    fn list(&self) -> Result<Vec<Image>, ImageError> {
        let mut images: Vec<Image> = self
            .store
            .list::<Image>(Bucket::Images)?
            .into_iter()
            .map(|(_, image)| image)
            .collect();
        for image in &mut images {
            image.layers_root = self.layout.layers();
        }
        Ok(images)
    }

    /// Stores a pulled image: a tag that pointed at another image moves here
    /// (that image keeps its other names, and goes when it has none left).
    fn commit(&self, mut image: Image) -> Result<(), ImageError> {
        let _guard = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let images = self.list()?;
        let mut changed = Vec::new();
        for other in images {
            if other.id == image.id {
                merge(&mut image.repo_tags, &other.repo_tags);
                merge(&mut image.repo_digests, &other.repo_digests);
                continue;
            }
            if other.repo_tags.iter().any(|t| image.repo_tags.contains(t)) {
                let mut other = other;
                other.repo_tags.retain(|t| !image.repo_tags.contains(t));
                changed.push(other);
            }
        }
        self.store.write(|w| {
            for other in &changed {
                if other.repo_tags.is_empty() && other.repo_digests.is_empty() {
                    w.delete(Bucket::Images, &other.id)?;
                } else {
                    w.put(Bucket::Images, &other.id, other)?;
                }
            }
            w.put(Bucket::Images, &image.id, &image)
        })?;
        tracing::info!(image = %image.id, tags = ?image.repo_tags, "image stored");
        Ok(())
    }

    /// Deletes blobs and layers no image, lease or running pull references.
    /// Candidates are renamed into `trash/` while the in-flight set is locked
    /// (a pull registers before it looks), then deleted without the lock.
    fn collect(&self) -> Result<(), ImageError> {
        let mut doomed = Vec::new();
        {
            let inflight = self.inflight.0.lock().unwrap_or_else(|e| e.into_inner());
            let images = self.list()?;
            let leases = self.store.list::<LeaseRecord>(Bucket::ImageLeases)?;
            let mut keep: HashSet<String> = inflight.keys().cloned().collect();
            for image in &images {
                keep.extend(image.blobs.iter().cloned());
                keep.extend(image.chain_ids.iter().cloned());
            }
            for (_, lease) in &leases {
                keep.extend(lease.chain_ids.iter().cloned());
            }
            for (dir, kind) in [
                (self.layout.blobs(), "blob"),
                (self.layout.layers(), "layer"),
            ] {
                let entries = std::fs::read_dir(&dir).map_err(ImageError::io(&dir))?;
                for entry in entries {
                    let entry = entry.map_err(ImageError::io(&dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if keep.contains(&format!("sha256:{name}")) {
                        continue;
                    }
                    let trash = self
                        .layout
                        .trash()
                        .join(format!("{kind}-{name}-{}", rand::random::<u32>()));
                    std::fs::rename(entry.path(), &trash).map_err(ImageError::io(entry.path()))?;
                    doomed.push(trash);
                }
            }
        }
        if !doomed.is_empty() {
            tracing::debug!(
                count = doomed.len(),
                "collecting unreferenced blobs and layers"
            );
        }
        for path in doomed {
            content::remove_any(&path);
        }
        Ok(())
    }
}

fn merge(into: &mut Vec<String>, from: &[String]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

/// Allocated bytes and distinct inodes under `dir`, without following symlinks.
fn usage(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> Result<(u64, u64), ImageError> {
    let mut bytes = 0;
    let mut inodes = 0;
    let meta = std::fs::symlink_metadata(dir).map_err(ImageError::io(dir))?;
    if seen.insert((meta.dev(), meta.ino())) {
        bytes += meta.blocks() * 512;
        inodes += 1;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A layer being collected or committed meanwhile: skip it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((bytes, inodes)),
        Err(e) => return Err(ImageError::io(dir)(e)),
    };
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (b, i) = usage(&entry.path(), seen)?;
            bytes += b;
            inodes += i;
        } else if seen.insert((meta.dev(), meta.ino())) {
            bytes += meta.blocks() * 512;
            inodes += 1;
        }
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &Path) -> Service {
        let config = Config {
            root: dir.to_path_buf(),
            ..Config::default()
        };
        let store = Arc::new(Store::open(dir).expect("store"));
        Service::new(Arc::new(config), store).expect("service")
    }

    fn image(n: u8, tags: &[&str], layer: &Digest) -> Image {
        Image {
            id: Digest::of(&[n]).to_string(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![format!("docker.io/library/x@{}", Digest::of(&[n, n]))],
            size: 1,
            config: RunConfig::default(),
            chain_ids: vec![layer.to_string()],
            blobs: vec![],
            layers_root: PathBuf::new(),
        }
    }

    #[tokio::test]
    async fn a_tag_moves_to_the_newer_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = service(dir.path());
        let layer = Digest::of(b"layer");
        s.inner
            .commit(image(
                1,
                &["docker.io/library/x:latest", "docker.io/library/x:1"],
                &layer,
            ))
            .expect("commit");
        s.inner
            .commit(image(2, &["docker.io/library/x:latest"], &layer))
            .expect("commit");
        let old = s.resolve("x:1").expect("resolve").expect("old image");
        assert_eq!(old.repo_tags, vec!["docker.io/library/x:1"]);
        let new = s.resolve("x").expect("resolve").expect("new image");
        assert_eq!(new.id, Digest::of(&[2]).to_string());
        assert_eq!(new.layer_dirs(), vec![s.inner.layout.layer(&layer)]);
    }

    #[tokio::test]
    async fn a_lease_keeps_layers_after_the_image_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = service(dir.path());
        let layer = Digest::of(b"layer");
        std::fs::create_dir_all(s.inner.layout.layer(&layer).join("bin")).expect("layer dir");
        s.inner
            .commit(image(1, &["docker.io/library/x:latest"], &layer))
            .expect("commit");
        let img = s.resolve("x").expect("resolve").expect("image");
        s.lease("container-1", &img).expect("lease");

        s.remove("x").await.expect("remove");
        assert!(s.resolve("x").expect("resolve").is_none());
        assert!(img.layer_dirs()[0].is_dir(), "leased layer kept");
        s.remove("x").await.expect("removing again succeeds");

        // The lease survives a restart of the service.
        drop(s);
        let s = service(dir.path());
        assert!(img.layer_dirs()[0].is_dir(), "lease is durable");
        s.release("container-1").await.expect("release");
        assert!(!img.layer_dirs()[0].exists(), "collected after release");
    }
}
