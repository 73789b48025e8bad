//! Device nodes and the conventional symlinks of a container's `/dev`.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknodat};
use nix::unistd::{Gid, Uid, fchownat, symlinkat};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType};

use super::channel::SetupError;
use super::path::{mkdir_all_in_root, mount_target, proc_fd};

/// One node to make: path inside the rootfs, kind, numbers, mode, owner.
pub(crate) struct Node {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The nodes every container gets, as runc and containerd give them.
pub(crate) fn defaults() -> Vec<Node> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Node {
        path: Path::new("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub(crate) fn from_spec(dev: &LinuxDevice) -> Option<Node> {
    let kind = match dev.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return None,
    };
    Some(Node {
        path: dev.path().clone(),
        kind,
        major: u64::try_from(dev.major()).unwrap_or(0),
        minor: u64::try_from(dev.minor()).unwrap_or(0),
        mode: dev.file_mode().unwrap_or(0o666),
        uid: dev.uid().unwrap_or(0),
        gid: dev.gid().unwrap_or(0),
    })
}

/// Directories of the host's `/dev` a privileged container does not copy:
/// they are mounts of their own (or the container gets its own instance).
const HOST_SKIPPED_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Every character and block device node under the host's `/dev`, for a
/// privileged container (symlinks, `/dev/console`, `/dev/ptmx` and the
/// skipped directories left out), in a stable order.
pub fn host() -> std::io::Result<Vec<LinuxDevice>> {
    let mut out = Vec::new();
    walk_host(Path::new("/dev"), &mut out)?;
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

fn walk_host(dir: &Path, out: &mut Vec<LinuxDevice>) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        // A node can vanish between the listing and the stat (udev).
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if !HOST_SKIPPED_DIRS.iter().any(|d| name == *d) {
                walk_host(&path, out)?;
            }
            continue;
        }
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        // The console is the host's; /dev/ptmx becomes the usual link to
        // the container's own devpts instance (`symlinks`).
        if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
            continue;
        }
        let rdev = meta.rdev();
        let device = LinuxDeviceBuilder::default()
            .path(path)
            .typ(typ)
            .major(i64::try_from(nix::sys::stat::major(rdev)).map_err(std::io::Error::other)?)
            .minor(i64::try_from(nix::sys::stat::minor(rdev)).map_err(std::io::Error::other)?)
            .file_mode(meta.mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build()
            .map_err(std::io::Error::other)?;
        out.push(device);
    }
    Ok(())
}

/// Makes `node` inside the root; where mknod is not allowed, binds the
/// host's node of the same path instead.
pub(crate) fn create(root: BorrowedFd<'_>, node: &Node) -> Result<(), SetupError> {
    let step = format!("creating device {}", node.path.display());
    let parent = node.path.parent().unwrap_or(Path::new("/dev"));
    let Some(name) = node.path.file_name() else {
        return Err(SetupError::new(step, "device path has no file name"));
    };
    let dir = mkdir_all_in_root(root, parent).map_err(|e| SetupError::new(&step, e))?;
    let mode = Mode::from_bits_truncate(node.mode & 0o7777);
    let dev = makedev(node.major, node.minor);
    match mknodat(dir.as_fd(), name, node.kind, mode, dev) {
        Ok(()) => {}
        Err(nix::Error::EEXIST) => return Ok(()),
        Err(nix::Error::EPERM) => {
            let target =
                mount_target(root, &node.path, false).map_err(|e| SetupError::new(&step, e))?;
            return mount(
                Some(&node.path),
                &proc_fd(target.as_fd()),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| SetupError::new(step, e));
        }
        Err(e) => return Err(SetupError::new(step, e)),
    }
    // mknod honours the umask; the mode is set again without it.
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        name,
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| SetupError::new(&step, e))?;
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| SetupError::new(step, e))
}

/// `/dev/fd`, `/dev/std{in,out,err}`, `/dev/ptmx`.
pub(crate) fn symlinks(root: BorrowedFd<'_>) -> Result<(), SetupError> {
    let dev = mkdir_all_in_root(root, Path::new("/dev"))
        .map_err(|e| SetupError::new("opening /dev", e))?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(SetupError::new(format!("linking /dev/{name}"), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_devices_are_nodes_only() {
        let devices = host().expect("list /dev");
        let null = devices
            .iter()
            .find(|d| d.path() == Path::new("/dev/null"))
            .expect("/dev/null");
        assert_eq!(
            (null.typ(), null.major(), null.minor()),
            (LinuxDeviceType::C, 1, 3)
        );
        for d in &devices {
            let p = d.path();
            assert!(
                !p.starts_with("/dev/pts") && !p.starts_with("/dev/shm"),
                "{p:?}"
            );
            assert!(p != Path::new("/dev/console") && p != Path::new("/dev/ptmx"));
            // Links (/dev/stdin, /dev/fd...) are not nodes.
            let meta = std::fs::symlink_metadata(p).expect("stat");
            assert!(!meta.file_type().is_symlink(), "{p:?}");
        }
        let mut sorted = devices.clone();
        sorted.sort_by(|a, b| a.path().cmp(b.path()));
        assert_eq!(devices, sorted);
    }
}
