//! Reading a small file of the image (`/etc/passwd`, `/etc/group`) from
//! its rootfs as the container would see it. The rootfs is untrusted: a
//! symlink `/etc/passwd -> /etc/shadow`, `../../../etc/passwd` or an
//! absolute host path must resolve inside the rootfs, never on the host,
//! so the lookup is the runtime's `open_in_root` (`openat2` with
//! `RESOLVE_IN_ROOT` from the rootfs directory). A FIFO or device planted
//! there must not block or be read either: only regular files are read,
//! and at most [`MAX_SIZE`] bytes.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::runtime::path::open_in_root;

/// Far above any real `/etc/passwd`; a bigger file is an attack on memory.
pub(crate) const MAX_SIZE: u64 = 4 << 20;

/// The contents of `rel` (relative to the rootfs, e.g. `etc/passwd`), or
/// `None` when it does not exist in the image.
pub(crate) fn read_in_root(rootfs: &Path, rel: &str) -> std::io::Result<Option<String>> {
    let root = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let flags = OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let fd = match open_in_root(root.as_fd(), Path::new(rel), flags) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) | Err(nix::Error::ENOTDIR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stat = fstat(&fd)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_SIZE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than 4 MiB",
        ));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        let outside = tempfile::tempdir().expect("tempdir");
        let host_file = outside.path().join("secret");
        std::fs::write(&host_file, "host").expect("write");
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("mkdir");
        // Absolute: names the host file, must not reach it.
        symlink(&host_file, root.path().join("etc/abs")).expect("symlink");
        assert_eq!(read_in_root(root.path(), "etc/abs").expect("read"), None);
        // Relative with `..`: clamped at the rootfs.
        let up = format!("../../../../../../..{}", host_file.display());
        symlink(&up, root.path().join("etc/rel")).expect("symlink");
        assert_eq!(read_in_root(root.path(), "etc/rel").expect("read"), None);
        // A symlink to a file inside the rootfs is followed there.
        std::fs::write(root.path().join("etc/real"), "image").expect("write");
        symlink("/etc/real", root.path().join("etc/inside")).expect("symlink");
        assert_eq!(
            read_in_root(root.path(), "etc/inside").expect("read"),
            Some("image".to_string())
        );
        // A symlinked directory on the way is confined too.
        symlink(outside.path(), root.path().join("dir")).expect("symlink");
        assert_eq!(read_in_root(root.path(), "dir/secret").expect("read"), None);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("mkdir");
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let err = read_in_root(root.path(), "etc/passwd").expect_err("a fifo");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("mkdir");
        let big = vec![b'a'; (MAX_SIZE + 1) as usize];
        std::fs::write(root.path().join("etc/group"), big).expect("write");
        let err = read_in_root(root.path(), "etc/group").expect_err("too big");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
