//! Paths inside a container's rootfs, resolved as if the rootfs were `/`.
//!
//! A mount target comes from the spec but its components come from the
//! image (and from volumes other containers may write to): a symlink
//! `/data -> /` in the image must not turn a bind onto `/data` into a bind
//! onto the host's `/` (the CVE-2021-30465 class). Every lookup here is an
//! `openat2(RESOLVE_IN_ROOT)` from a descriptor of the rootfs, so `..` and
//! absolute symlinks stop at the rootfs; the mount then goes onto
//! `/proc/self/fd/<n>` of the resolved descriptor, never onto a path string
//! that could be re-resolved differently.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, mkdirat};

/// The descriptor's name in procfs, for syscalls that take paths.
pub fn proc_fd(fd: BorrowedFd<'_>) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `path` (absolute or relative, taken relative to the root) without its
/// leading `/`, refusing nothing: `..` is clamped by the kernel.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect()
}

/// Opens `path` inside `root` with `flags` (O_CLOEXEC is added).
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = relative(path);
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    loop {
        match openat2(root, &rel, how) {
            // openat2 asks for a retry when a rename raced the lookup.
            Err(nix::Error::EAGAIN) => continue,
            other => return other,
        }
    }
}

/// Opens directory `path` inside `root`, creating missing components
/// (mode 0755) one at a time, each under an already resolved parent. A
/// dangling symlink on the way is followed inside the root and its target
/// made, as a lookup of the full path would have followed it.
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut path = relative(path);
    let mut links = 0;
    'restart: loop {
        let mut dir = open_in_root(root, Path::new("."), flags)?;
        let mut walked = PathBuf::new();
        let parts: Vec<_> = path.components().collect();
        for (i, part) in parts.iter().enumerate() {
            walked.push(part);
            dir = match open_in_root(root, &walked, flags) {
                Ok(fd) => fd,
                Err(nix::Error::ENOENT) => {
                    let name = part.as_os_str();
                    match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) => {}
                        Err(nix::Error::EEXIST) => {
                            // Something is there that did not resolve: a
                            // dangling symlink. Continue at its target.
                            let target = readlinkat(dir.as_fd(), name)?;
                            links += 1;
                            if links > 40 {
                                return Err(nix::Error::ELOOP);
                            }
                            let mut next = PathBuf::from(walked.parent().unwrap_or(Path::new("")));
                            next.push(relative(Path::new(&target)));
                            if Path::new(&target).is_absolute() {
                                next = relative(Path::new(&target));
                            }
                            next.extend(&parts[i + 1..]);
                            path = next;
                            continue 'restart;
                        }
                        Err(e) => return Err(e),
                    }
                    open_in_root(root, &walked, flags)?
                }
                Err(e) => return Err(e),
            };
        }
        return Ok(dir);
    }
}

/// An `O_PATH` descriptor of mount target `path` inside `root`, made first
/// (an empty file, or a directory when `dir`) when missing.
pub fn mount_target(root: BorrowedFd<'_>, path: &Path, dir: bool) -> nix::Result<OwnedFd> {
    match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(e),
    }
    if dir {
        return mkdir_all_in_root(root, path);
    }
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        let parent_path = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let name = path.file_name().unwrap_or(OsStr::new(".")).to_owned();
        let parent = mkdir_all_in_root(root, &parent_path)?;
        let flags = OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mode = Mode::from_bits_truncate(0o644);
        match openat(parent.as_fd(), name.as_os_str(), flags, mode) {
            Ok(fd) => {
                drop(fd);
                return open_in_root(root, &path, OFlag::O_PATH);
            }
            // A dangling symlink at the name (`/etc/resolv.conf ->
            // ../run/...` in many images): make its target, inside the root.
            Err(nix::Error::ELOOP) => {
                let target = PathBuf::from(readlinkat(parent.as_fd(), name.as_os_str())?);
                path = if target.is_absolute() {
                    target
                } else {
                    parent_path.join(target)
                };
            }
            Err(e) => return Err(e),
        }
    }
    Err(nix::Error::ELOOP)
}

/// The mount id of the mount `fd` is on (from /proc/self/fdinfo).
pub fn mount_id(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no mnt_id in fdinfo"))
}
