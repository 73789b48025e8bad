//! A container's root filesystem from an image's unpacked layers.
//!
//! Layout, one directory per snapshot under `<root>/snapshots/<id>/`:
//! - `rootfs/` the mount point the container's init binds as its `/`;
//! - `upper/`, `work/` overlayfs' writable layer and scratch dir (writable
//!   overlay snapshots only);
//! - `kind` which of [`Kind`] was used, so unmount and usage need no
//!   other record.
//!
//! Overlayfs is tried first; where it is unavailable (no overlay module, or
//! a backing filesystem it refuses) the layers are copied into `rootfs/`
//! lowest first, applying overlay-style whiteouts (a 0:0 character device
//! deletes, a `trusted.overlay.opaque=y` directory hides the layers below),
//! which is the on-disk form the image unpacker produces for overlayfs.
//!
//! The mount lives in the mount namespace of the caller (the daemon's);
//! the container's init bind-mounts `rootfs/` into its own namespace.

mod chown;
mod copy;
mod overlay;
mod usage;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(crate) use overlay::unescape_octal as unescape_mount_point;
pub use usage::Usage;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot id {0:?}")]
    InvalidId(String),
    #[error("a snapshot needs at least one layer")]
    NoLayers,
    #[error("layer {path} is not a directory")]
    BadLayer {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {0} already exists")]
    Exists(String),
    #[error("snapshot {0} not found")]
    NotFound(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting overlay at {path} (options {options:?})")]
    Mount {
        path: PathBuf,
        options: String,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("overlay options for {layers} layers exceed the kernel's page-size limit")]
    TooManyLayers { layers: usize },
    #[error("cannot make an idmapped mount of {path}")]
    Idmap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

/// How a snapshot's rootfs was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// overlayfs with the container's own upper dir.
    Overlay,
    /// overlayfs of the layers alone, mounted read-only.
    OverlayReadOnly,
    /// the layers copied into `rootfs/` (no overlayfs here).
    Copy,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Overlay => "overlay",
            Kind::OverlayReadOnly => "overlay-ro",
            Kind::Copy => "copy",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        match text.trim() {
            "overlay" => Some(Kind::Overlay),
            "overlay-ro" => Some(Kind::OverlayReadOnly),
            "copy" => Some(Kind::Copy),
            _ => None,
        }
    }
}

/// Which mechanism [`Snapshotter::prepare`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// overlayfs, falling back to a copy when the overlay mount is refused.
    #[default]
    Auto,
    Overlay,
    Copy,
}

/// One id range of a user namespace: `size` ids from `container_id`
/// inside are `host_id` and up on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

impl IdRange {
    /// The host id of `id` inside; outside the range the overflow id.
    pub fn host(&self, id: u32) -> u32 {
        match id.checked_sub(self.container_id) {
            Some(offset) if offset < self.size => self.host_id.saturating_add(offset),
            _ => 65534,
        }
    }
}

/// The user namespace whose root owns a snapshot: its lower layers are
/// mounted idmapped through it (the layers on disk stay as unpacked,
/// shared with every other container), its upper dir belongs to its root;
/// where idmapped mounts are refused, the layers are copied and the copy
/// chowned.
#[derive(Debug, Clone)]
pub struct Idmap {
    /// A file of the user namespace (`/proc/<pid>/ns/user` or a bind of it).
    pub userns: PathBuf,
    pub uid: IdRange,
    pub gid: IdRange,
}

/// A prepared rootfs.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub rootfs: PathBuf,
    pub kind: Kind,
}

/// Snapshots under `<root>/snapshots`.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
    backend: Backend,
}

impl Snapshotter {
    /// `root` is the daemon's persistent root; snapshots go to `root/snapshots`.
    pub fn new(root: &Path, backend: Backend) -> Snapshotter {
        Snapshotter {
            dir: root.join("snapshots"),
            backend,
        }
    }

    fn path(&self, id: &str) -> Result<PathBuf, SnapshotError> {
        let valid = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(SnapshotError::InvalidId(id.to_string()));
        }
        Ok(self.dir.join(id))
    }

    /// The rootfs path of snapshot `id` (whether or not it exists).
    pub fn rootfs(&self, id: &str) -> Result<PathBuf, SnapshotError> {
        Ok(self.path(id)?.join("rootfs"))
    }

    /// Makes and mounts the rootfs of `id` from `layers`, lowest first. A
    /// failure leaves nothing behind.
    pub fn prepare(
        &self,
        id: &str,
        layers: &[PathBuf],
        read_only: bool,
    ) -> Result<Snapshot, SnapshotError> {
        self.prepare_with(id, layers, read_only, None)
    }

    /// [`prepare`](Self::prepare) for a container in a user namespace:
    /// writable, its files owned as `idmap` shifts them.
    pub fn prepare_idmapped(
        &self,
        id: &str,
        layers: &[PathBuf],
        idmap: &Idmap,
    ) -> Result<Snapshot, SnapshotError> {
        self.prepare_with(id, layers, false, Some(idmap))
    }

    fn prepare_with(
        &self,
        id: &str,
        layers: &[PathBuf],
        read_only: bool,
        idmap: Option<&Idmap>,
    ) -> Result<Snapshot, SnapshotError> {
        let dir = self.path(id)?;
        if layers.is_empty() {
            return Err(SnapshotError::NoLayers);
        }
        for layer in layers {
            match fs::metadata(layer) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(SnapshotError::BadLayer {
                        path: layer.clone(),
                        source: io::Error::from(io::ErrorKind::NotADirectory),
                    });
                }
                Err(source) => {
                    return Err(SnapshotError::BadLayer {
                        path: layer.clone(),
                        source,
                    });
                }
            }
        }
        fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SnapshotError::Exists(id.to_string()));
            }
            Err(e) => return Err(io_err("creating", &dir)(e)),
        }
        let made = match idmap {
            None => self.make(&dir, layers, read_only),
            Some(idmap) => self.make_idmapped(&dir, layers, idmap),
        };
        match made {
            Ok(kind) => Ok(Snapshot {
                id: id.to_string(),
                rootfs: dir.join("rootfs"),
                kind,
            }),
            Err(e) => {
                // Roll back: the mount (if any) first, then the files.
                let _ = overlay::unmount(&dir.join("rootfs"));
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn make(&self, dir: &Path, layers: &[PathBuf], read_only: bool) -> Result<Kind, SnapshotError> {
        let rootfs = dir.join("rootfs");
        fs::create_dir(&rootfs).map_err(io_err("creating", &rootfs))?;
        let kind = match self.backend {
            Backend::Copy => copy_into(&rootfs, layers)?,
            Backend::Overlay => overlay::mount(dir, layers, read_only)?,
            Backend::Auto => match overlay::mount(dir, layers, read_only) {
                Ok(kind) => kind,
                Err(SnapshotError::Mount { source, .. })
                    if matches!(source, nix::Error::ENODEV | nix::Error::EINVAL) =>
                {
                    tracing::warn!(error = %source, "overlayfs unavailable, copying layers");
                    let _ = fs::remove_dir_all(dir.join("upper"));
                    let _ = fs::remove_dir_all(dir.join("work"));
                    copy_into(&rootfs, layers)?
                }
                Err(e) => return Err(e),
            },
        };
        let kind_path = dir.join("kind");
        fs::write(&kind_path, kind.as_str()).map_err(io_err("writing", &kind_path))?;
        Ok(kind)
    }

    fn make_idmapped(
        &self,
        dir: &Path,
        layers: &[PathBuf],
        idmap: &Idmap,
    ) -> Result<Kind, SnapshotError> {
        let rootfs = dir.join("rootfs");
        fs::create_dir(&rootfs).map_err(io_err("creating", &rootfs))?;
        let copy = || -> Result<Kind, SnapshotError> {
            let kind = copy_into(&rootfs, layers)?;
            chown::tree(&rootfs, idmap)?;
            Ok(kind)
        };
        let kind = match self.backend {
            Backend::Copy => copy()?,
            Backend::Overlay => overlay::mount_idmapped(dir, layers, idmap)?,
            Backend::Auto => match overlay::mount_idmapped(dir, layers, idmap) {
                Ok(kind) => kind,
                Err(e @ (SnapshotError::Idmap { .. } | SnapshotError::Mount { .. })) => {
                    tracing::warn!(error = %e, "no idmapped overlay here, copying and chowning layers");
                    let _ = overlay::unmount(&rootfs);
                    let _ = fs::remove_dir_all(dir.join("upper"));
                    let _ = fs::remove_dir_all(dir.join("work"));
                    copy()?
                }
                Err(e) => return Err(e),
            },
        };
        let kind_path = dir.join("kind");
        fs::write(&kind_path, kind.as_str()).map_err(io_err("writing", &kind_path))?;
        Ok(kind)
    }

    fn kind(&self, dir: &Path) -> Result<Option<Kind>, SnapshotError> {
        let path = dir.join("kind");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Kind::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Unmounts the rootfs of `id`; succeeds when it is not mounted.
    pub fn unmount(&self, id: &str) -> Result<(), SnapshotError> {
        let dir = self.path(id)?;
        overlay::unmount(&dir.join("rootfs"))?;
        overlay::clear_volatile_mark(&dir)
    }

    /// Mounts the rootfs of an existing overlay snapshot again (after an
    /// [`unmount`](Self::unmount)), from the same layers. After a reboot a
    /// writable overlay refuses: it was mounted `volatile`, its writes may
    /// be torn.
    pub fn remount(&self, id: &str, layers: &[PathBuf]) -> Result<(), SnapshotError> {
        let dir = self.path(id)?;
        match self.kind(&dir)? {
            None => Err(SnapshotError::NotFound(id.to_string())),
            Some(Kind::Copy) => Ok(()),
            Some(kind) => {
                if overlay::is_mounted(&dir.join("rootfs"))? {
                    return Ok(());
                }
                overlay::mount(&dir, layers, kind == Kind::OverlayReadOnly).map(|_| ())
            }
        }
    }

    /// Unmounts and deletes snapshot `id`; succeeds when it is gone already.
    pub fn remove(&self, id: &str) -> Result<(), SnapshotError> {
        let dir = self.path(id)?;
        overlay::unmount(&dir.join("rootfs"))?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &dir)(e)),
        }
    }

    /// What the container wrote: the upper dir of an overlay, the whole
    /// rootfs of a copy (there the image and the writes are one tree), zero
    /// for a read-only overlay.
    pub fn usage(&self, id: &str) -> Result<Usage, SnapshotError> {
        let dir = self.path(id)?;
        match self.kind(&dir)? {
            None => Err(SnapshotError::NotFound(id.to_string())),
            Some(Kind::Overlay) => usage::measure(&dir.join("upper")),
            Some(Kind::OverlayReadOnly) => Ok(Usage::default()),
            Some(Kind::Copy) => usage::measure(&dir.join("rootfs")),
        }
    }
}

fn copy_into(rootfs: &Path, layers: &[PathBuf]) -> Result<Kind, SnapshotError> {
    for layer in layers {
        copy::apply_layer(layer, rootfs)?;
    }
    Ok(Kind::Copy)
}
