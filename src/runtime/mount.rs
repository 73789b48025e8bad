//! Small mounts the pod needs: its own `/dev/shm` (a size-limited tmpfs).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount a {size}-byte tmpfs on {path}")]
    Tmpfs {
        path: PathBuf,
        size: u64,
        #[source]
        source: Errno,
    },
    #[error("cannot unmount {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Mounts a shared-memory tmpfs (mode 1777, `size` bytes, no exec/suid/dev)
/// on `path`, creating the directory.
pub fn mount_shm(path: &Path, size: u64) -> Result<(), MountError> {
    std::fs::create_dir_all(path).map_err(|source| MountError::MountPoint {
        path: path.to_path_buf(),
        source,
    })?;
    let options = format!("mode=1777,size={size}");
    nix::mount::mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|source| MountError::Tmpfs {
        path: path.to_path_buf(),
        size,
        source,
    })
}

/// Unmounts `path` (lazily: a container still using it keeps its view until
/// it exits). Not mounted or not there is fine.
pub fn unmount(path: &Path) -> Result<(), MountError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(source) => Err(MountError::Unmount {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub fn is_mount_point(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return false;
    };
    match (nix::sys::stat::stat(path), nix::sys::stat::stat(parent)) {
        (Ok(own), Ok(up)) => own.st_dev != up.st_dev,
        _ => false,
    }
}
