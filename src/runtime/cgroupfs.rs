//! `/sys/fs/cgroup` inside the container, read-only, for whichever layout
//! the host has:
//! - cgroup v2 (`/sys/fs/cgroup` is cgroup2): a fresh cgroup2 mount, which
//!   in the container's cgroup namespace shows its own cgroup as the root;
//! - v1 or hybrid (`/sys/fs/cgroup` is a tmpfs): a tmpfs with one fresh
//!   mount per host hierarchy (same controllers, so the kernel reuses the
//!   hierarchy), the host's alias symlinks (`cpu -> cpu,cpuacct`), and the
//!   v2 `unified` mount when the host has one; the tmpfs then goes
//!   read-only.
//!
//! Fresh mounts are only right inside a cgroup namespace (created after the
//! init joined its cgroups). Without one, the host's tree is bound
//! read-only instead, as older runtimes did.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::mount::{MsFlags, mount};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use nix::unistd::symlinkat;

use super::mounts::{Options, bind};
use super::path::{mount_target, proc_fd};
use super::sys;

const HOST: &str = "/sys/fs/cgroup";

pub(crate) fn mount_cgroup(
    root: BorrowedFd<'_>,
    dest: &Path,
    flags: MsFlags,
    new_cgroupns: bool,
) -> std::io::Result<()> {
    if !new_cgroupns {
        let opts = Options {
            bind: true,
            recursive: true,
            recursive_read_only: flags.contains(MsFlags::MS_RDONLY),
            ..Options::default()
        };
        return bind(root, Path::new(HOST), dest, &opts, None);
    }
    let target = mount_target(root, dest, true)?;
    if statfs(HOST)?.filesystem_type() == CGROUP2_SUPER_MAGIC {
        mount(
            Some("cgroup2"),
            &proc_fd(target.as_fd()),
            Some("cgroup2"),
            flags,
            None::<&str>,
        )?;
        return Ok(());
    }
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        &proc_fd(target.as_fd()),
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    for h in hierarchies(&info) {
        let sub = dest.join(&h.name);
        let fd = mount_target(root, &sub, true)?;
        let (typ, data) = if h.v2 {
            ("cgroup2", None)
        } else {
            ("cgroup", Some(h.options.as_str()))
        };
        mount(Some(typ), &proc_fd(fd.as_fd()), Some(typ), flags, data)?;
    }
    for entry in fs::read_dir(HOST)? {
        let entry = entry?;
        if entry.file_type()?.is_symlink() {
            let link = fs::read_link(entry.path())?;
            match symlinkat(&link, target.as_fd(), entry.file_name().as_os_str()) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        sys::mount_set_read_only(reopen(root, dest)?.as_fd(), false)?;
    }
    Ok(())
}

fn reopen(root: BorrowedFd<'_>, dest: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    Ok(super::path::open_in_root(
        root,
        dest,
        nix::fcntl::OFlag::O_PATH,
    )?)
}

/// A cgroup hierarchy mounted directly under /sys/fs/cgroup on the host.
#[derive(Debug, PartialEq, Eq)]
struct Hierarchy {
    /// The directory name under /sys/fs/cgroup (`memory`, `unified`, ...).
    name: String,
    /// The superblock options minus rw/ro: the controllers and `name=`.
    options: String,
    v2: bool,
}

fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let Some(name) = point.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let mut fields = right.split(' ');
        let (fstype, _source, super_opts) = (fields.next(), fields.next(), fields.next());
        let v2 = match fstype {
            Some("cgroup") => false,
            Some("cgroup2") => true,
            _ => continue,
        };
        let options = super_opts
            .unwrap_or("")
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro"))
            .collect::<Vec<_>>()
            .join(",");
        out.push(Hierarchy {
            name: name.to_string(),
            options,
            v2,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_mountinfo_lists_v1_controllers_and_unified() {
        let info = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 /x /sys/fs/cgroup/cpu,cpuacct/x rw - cgroup cgroup rw,cpu,cpuacct
";
        let h = hierarchies(info);
        let names: Vec<_> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["unified", "systemd", "cpu,cpuacct"]);
        assert!(h[0].v2);
        assert_eq!(h[1].options, "xattr,name=systemd");
        assert_eq!(h[2].options, "cpu,cpuacct");
    }
}
