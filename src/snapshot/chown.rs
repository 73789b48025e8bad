//! The copy fallback of an idmapped snapshot: every entry of the copied
//! rootfs gets the host ids its image ids map to, symlinks themselves
//! included (never followed).

use std::fs;
use std::os::unix::fs::{MetadataExt, lchown};
use std::path::Path;

use super::{Idmap, SnapshotError, io_err};

pub(super) fn tree(root: &Path, idmap: &Idmap) -> Result<(), SnapshotError> {
    let meta = fs::symlink_metadata(root).map_err(io_err("reading", root))?;
    shift(root, &meta, idmap)?;
    if !meta.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(root).map_err(io_err("reading", root))? {
        let entry = entry.map_err(io_err("reading", root))?;
        tree(&entry.path(), idmap)?;
    }
    Ok(())
}

fn shift(path: &Path, meta: &fs::Metadata, idmap: &Idmap) -> Result<(), SnapshotError> {
    let (uid, gid) = (idmap.uid.host(meta.uid()), idmap.gid.host(meta.gid()));
    lchown(path, Some(uid), Some(gid)).map_err(io_err("chowning", path))?;
    // chown clears setuid/setgid bits; the image's are kept.
    if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmodding", path))?;
    }
    Ok(())
}
