//! Disk usage of a snapshot's writable layer, as `du` counts it: allocated
//! blocks, each inode once.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{SnapshotError, io_err};

/// Bytes allocated and inodes used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

pub(super) fn measure(root: &Path) -> Result<Usage, SnapshotError> {
    let mut usage = Usage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Files come and go while a container runs.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.bytes += meta.blocks() * 512;
        if meta.is_dir() {
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading", &path)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("reading", &path))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}
