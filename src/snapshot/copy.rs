//! The copy fallback: layers applied one by one onto a plain directory,
//! interpreting the overlay-style whiteouts the unpacker leaves in them.
//! Ownership, modes, times, extended attributes (file capabilities among
//! them; overlay's own `trusted.overlay.*` markers excepted), symlinks,
//! device nodes and hard links (within a layer) are kept.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;

use super::{SnapshotError, io_err};

/// Copies `layer` onto `target` (which exists).
pub(super) fn apply_layer(layer: &Path, target: &Path) -> Result<(), SnapshotError> {
    let mut links = HashMap::new();
    copy_dir(layer, target, &mut links)?;
    let meta = fs::symlink_metadata(layer).map_err(io_err("reading", layer))?;
    set_attrs(layer, target, &meta)
}

const OPAQUE: &[u8] = b"trusted.overlay.opaque";

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> Result<bool, SnapshotError> {
    let value =
        crate::runtime::sys::lgetxattr(dir, OPAQUE).map_err(io_err("reading xattrs of", dir))?;
    Ok(value.as_deref() == Some(b"y"))
}

fn remove_any(path: &Path) -> Result<(), SnapshotError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("reading", path)(e)),
    };
    let removed = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    removed.map_err(io_err("removing", path))
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), SnapshotError> {
    for entry in fs::read_dir(src).map_err(io_err("reading", src))? {
        let entry = entry.map_err(io_err("reading", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io_err("reading", &from))?;
        if is_whiteout(&meta) {
            remove_any(&to)?;
            continue;
        }
        if meta.is_dir() {
            let existing = fs::symlink_metadata(&to).ok();
            let keep = existing.is_some_and(|m| m.is_dir()) && !is_opaque(&from)?;
            if !keep {
                remove_any(&to)?;
                fs::create_dir(&to).map_err(io_err("creating", &to))?;
            }
            copy_dir(&from, &to, links)?;
            set_attrs(&from, &to, &meta)?;
            continue;
        }
        remove_any(&to)?;
        copy_entry(&from, &to, &meta, links)?;
    }
    Ok(())
}

fn copy_entry(
    from: &Path,
    to: &Path,
    meta: &fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), SnapshotError> {
    let kind = meta.file_type();
    if kind.is_file() {
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                return fs::hard_link(first, to).map_err(io_err("linking", to));
            }
            links.insert((meta.dev(), meta.ino()), to.to_path_buf());
        }
        fs::copy(from, to).map_err(io_err("copying", from))?;
    } else if kind.is_symlink() {
        let target = fs::read_link(from).map_err(io_err("reading", from))?;
        symlink(&target, to).map_err(io_err("creating", to))?;
    } else if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
        let sflag = if kind.is_char_device() {
            SFlag::S_IFCHR
        } else if kind.is_block_device() {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFIFO
        };
        let mode = Mode::from_bits_truncate(meta.mode() & 0o7777);
        mknod(to, sflag, mode, meta.rdev()).map_err(|e| io_err("creating", to)(e.into()))?;
    } else {
        // Sockets in a layer are meaningless once copied.
        return Ok(());
    }
    set_attrs(from, to, meta)
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    use crate::runtime::sys;
    for name in sys::llistxattr(from).map_err(io_err("listing xattrs of", from))? {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        if let Some(value) =
            sys::lgetxattr(from, &name).map_err(io_err("reading xattrs of", from))?
        {
            sys::lsetxattr(to, &name, &value).map_err(io_err("setting xattrs of", to))?;
        }
    }
    Ok(())
}

fn set_attrs(from: &Path, path: &Path, meta: &fs::Metadata) -> Result<(), SnapshotError> {
    lchown(path, Some(meta.uid()), Some(meta.gid())).map_err(io_err("chown", path))?;
    if !meta.file_type().is_symlink() {
        // chown clears set-id bits, so the mode goes after it.
        let mode = fs::Permissions::from_mode(meta.mode() & 0o7777);
        fs::set_permissions(path, mode).map_err(io_err("chmod", path))?;
    }
    // After chown, which drops security.capability.
    copy_xattrs(from, path)?;
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_err("setting times of", path)(e.into()))
}
