//! Unpacking one layer tar into its own directory, safely.
//!
//! Nothing is ever written outside the target directory. Every entry path is
//! split into plain components (an absolute path or a `..` is refused), and
//! each parent component is checked with `lstat` as the walk goes down: a
//! missing one is created as a directory, a symlink is refused. Final names are
//! unlinked and created fresh (`O_EXCL|O_NOFOLLOW`), never opened through
//! whatever the archive put there before. The walk is race-free because the
//! target is a private directory under `ingest/` that only this sequential
//! unpacker writes to: the archive is the only adversary, and it cannot act
//! between our checks. (`pathrs`/`openat2(RESOLVE_IN_ROOT)` would also defend
//! against concurrent writers, which cannot exist here, at the cost of unsafe
//! or a C-backed dependency.)
//!
//! Whiteouts become what overlayfs understands: `.wh.NAME` a 0:0 character
//! device NAME, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its
//! directory, so stacking the layer directories as overlay lowerdirs shows the
//! image's tree.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::Digest as _;

use super::reference::Digest;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("tar entry {entry:?} is refused: {reason}")]
    Unsafe { entry: String, reason: &'static str },
    #[error("cannot unpack tar entry {entry:?}")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the layer archive")]
    Read(#[source] io::Error),
    #[error("uncompressed layer hashes to {got}, the image config says {expected}")]
    DiffId { expected: Digest, got: Digest },
    #[error("the pull was cancelled")]
    Cancelled,
}

/// Counts and hashes the uncompressed stream: its sha256 is the diff ID.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Picks the decompressor from the stream's magic bytes rather than the media
/// type, which registries and builders spell inconsistently.
fn decompress<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// Unpacks a (possibly compressed) layer from `reader` into `dest`, an empty
/// directory, and checks the diff ID. Returns the uncompressed size. On error
/// `dest` holds a partial tree the caller must remove.
pub fn unpack(
    reader: impl Read,
    dest: &Path,
    diff_id: &Digest,
    cancel: &AtomicBool,
) -> Result<u64, UnpackError> {
    let hashing = HashingReader {
        inner: decompress(reader).map_err(UnpackError::Read)?,
        hasher: sha2::Sha256::new(),
        bytes: 0,
    };
    let mut archive = tar::Archive::new(hashing);
    let mut dirs = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(UnpackError::Cancelled);
        }
        let mut entry = entry.map_err(UnpackError::Read)?;
        if let Some(dir) = unpack_entry(&mut entry, dest)? {
            dirs.push(dir);
        }
    }
    // Directory times last: creating their children changed them.
    for (path, mtime) in dirs.iter().rev() {
        let _ = filetime::set_symlink_file_times(path, *mtime, *mtime);
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Read)?;
    let got = Digest::from_sha256(&rest.hasher.finalize());
    if &got != diff_id {
        return Err(UnpackError::DiffId {
            expected: diff_id.clone(),
            got,
        });
    }
    Ok(rest.bytes)
}

/// The entry's path as plain components, or why it is refused.
fn components(path: &Path) -> Result<Vec<&std::ffi::OsStr>, &'static str> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
            Component::ParentDir => return Err("path contains `..`"),
        }
    }
    Ok(out)
}

/// Walks `parts` below `root`, creating missing directories, refusing symlinks
/// and non-directories on the way. Returns the resolved directory.
fn ensure_dirs(
    root: &Path,
    parts: &[&std::ffi::OsStr],
    create: bool,
) -> Result<PathBuf, &'static str> {
    let mut dir = root.to_path_buf();
    for part in parts {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => return Err("path goes through a symlink"),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err("a parent of the path is not a directory"),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&dir)
                    .map_err(|_| "cannot create a parent directory")?;
            }
            Err(_) => return Err("a parent of the path does not exist"),
        }
    }
    Ok(dir)
}

fn remove_existing(path: &Path, keep_dir: bool) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

type DirTime = (PathBuf, filetime::FileTime);

fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
) -> Result<Option<DirTime>, UnpackError> {
    let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
    let name = raw.to_string_lossy().into_owned();
    let unsafe_entry = |reason| UnpackError::Unsafe {
        entry: name.clone(),
        reason,
    };
    let io_err = |source| UnpackError::Entry {
        entry: name.clone(),
        source,
    };
    let parts = components(&raw).map_err(unsafe_entry)?;
    let kind = entry.header().entry_type();
    let Some((last, parents)) = parts.split_last() else {
        // `./`: the layer root itself; only its metadata matters.
        if kind.is_dir() {
            apply_metadata(entry, root).map_err(io_err)?;
            return Ok(Some((root.to_path_buf(), mtime(entry))));
        }
        return Ok(None);
    };
    let parent = ensure_dirs(root, parents, true).map_err(unsafe_entry)?;
    let file_name = last.to_string_lossy();

    if file_name == OPAQUE {
        xattr::set(&parent, "trusted.overlay.opaque", b"y").map_err(io_err)?;
        return Ok(None);
    }
    if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.` metadata (aufs hard-link dirs) has no overlay meaning.
            return Ok(None);
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(unsafe_entry("whiteout of an invalid name"));
        }
        let target = parent.join(hidden);
        remove_existing(&target, false).map_err(io_err)?;
        nix::sys::stat::mknod(
            &target,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            nix::sys::stat::makedev(0, 0),
        )
        .map_err(|e| io_err(e.into()))?;
        std::os::unix::fs::lchown(&target, Some(0), Some(0)).map_err(io_err)?;
        return Ok(None);
    }

    let target = parent.join(last);
    remove_existing(&target, kind.is_dir()).map_err(io_err)?;
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .map_err(io_err)?;
            io::copy(entry, &mut file).map_err(io_err)?;
        }
        tar::EntryType::Directory => {
            if !target.is_dir() {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&target)
                    .map_err(io_err)?;
            }
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| unsafe_entry("symlink without a target"))?;
            // A symlink may point anywhere: it is only ever resolved inside the
            // container's root, never by us.
            std::os::unix::fs::symlink(&link, &target).map_err(io_err)?;
        }
        tar::EntryType::Link => {
            let link = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| unsafe_entry("hard link without a target"))?
                .into_owned();
            let link_parts = components(&link)
                .map_err(|_| unsafe_entry("hard link target outside the layer"))?;
            let Some((link_last, link_parents)) = link_parts.split_last() else {
                return Err(unsafe_entry("hard link to the layer root"));
            };
            let source = ensure_dirs(root, link_parents, false)
                .map_err(|_| unsafe_entry("hard link target outside the layer or missing"))?
                .join(link_last);
            match std::fs::symlink_metadata(&source) {
                Ok(m) if m.is_dir() => return Err(unsafe_entry("hard link to a directory")),
                Ok(_) => {}
                Err(_) => return Err(unsafe_entry("hard link target does not exist in the layer")),
            }
            // link(2) does not follow a symlink source: the link stays inside.
            std::fs::hard_link(&source, &target).map_err(io_err)?;
            return Ok(None);
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let header = entry.header();
            let major = header.device_major().map_err(io_err)?.unwrap_or(0);
            let minor = header.device_minor().map_err(io_err)?.unwrap_or(0);
            let flag = match kind {
                tar::EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                tar::EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                _ => nix::sys::stat::SFlag::S_IFIFO,
            };
            nix::sys::stat::mknod(
                &target,
                flag,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(major.into(), minor.into()),
            )
            .map_err(|e| io_err(e.into()))?;
        }
        other => {
            tracing::debug!(entry = %name, kind = ?other, "skipping tar entry of an unsupported type");
            return Ok(None);
        }
    }
    apply_metadata(entry, &target).map_err(io_err)?;
    if kind.is_dir() {
        return Ok(Some((target, mtime(entry))));
    }
    Ok(None)
}

fn mtime<R: Read>(entry: &tar::Entry<'_, R>) -> filetime::FileTime {
    let secs = entry.header().mtime().unwrap_or(0);
    filetime::FileTime::from_unix_time(i64::try_from(secs).unwrap_or(0), 0)
}

/// Ownership, then mode (chown clears set-id bits), xattrs, mtime.
fn apply_metadata<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> io::Result<()> {
    let header = entry.header();
    let is_symlink = header.entry_type().is_symlink();
    let uid = u32::try_from(header.uid()?).map_err(io::Error::other)?;
    let gid = u32::try_from(header.gid()?).map_err(io::Error::other)?;
    let mode = header.mode()? & 0o7777;
    let time = mtime(entry);
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if !is_symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            let Ok(key) = extension.key() else { continue };
            let Some(attr) = key.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            // "Where the filesystem allows": an unsupported namespace is not fatal.
            if let Err(e) = xattr::set(path, attr, extension.value_bytes()) {
                tracing::debug!(path = %path.display(), attr, error = %e, "xattr not kept");
            }
        }
    }
    filetime::set_symlink_file_times(path, time, time)
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
