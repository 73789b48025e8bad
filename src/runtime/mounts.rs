//! The spec's mounts, made inside the container's new mount namespace
//! before `pivot_root`, each onto a target resolved inside the rootfs.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sys::statvfs::{FsFlags, statvfs};
use oci_spec::runtime::Mount;

use super::channel::SetupError;
use super::path::{mount_id, mount_target, open_in_root, proc_fd};
use super::{cgroupfs, sys};

/// A mount's options split the way `mount(2)` wants them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
    pub recursive_read_only: bool,
    /// `idmap`/`ridmap` (OCI 1.2): a bind idmapped through the
    /// container's user namespace.
    pub idmap: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            data: Vec::new(),
            bind: false,
            recursive: false,
            recursive_read_only: false,
            idmap: false,
        }
    }
}

pub(crate) fn parse_options(options: &[String]) -> Options {
    let mut out = Options::default();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => {
                out.bind = true;
                continue;
            }
            "rbind" => {
                out.bind = true;
                out.recursive = true;
                continue;
            }
            "rro" => {
                out.recursive_read_only = true;
                continue;
            }
            "idmap" | "ridmap" => {
                out.idmap = true;
                continue;
            }
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "unbindable"
            | "runbindable" => {
                out.propagation = propagation(option).unwrap_or(MsFlags::empty());
                continue;
            }
            _ => {
                out.data.push(option.clone());
                continue;
            }
        };
        out.flags.insert(set);
        out.flags.remove(clear);
    }
    out
}

/// The `mount(2)` flags of a propagation name.
pub(crate) fn propagation(name: &str) -> Option<MsFlags> {
    let rec = MsFlags::MS_REC;
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        _ => return None,
    })
}

/// Makes mount `m` under `root` (a descriptor of the rootfs). A bind with
/// the `idmap` option is idmapped through `userns` (the pod's user
/// namespace, the one the container joins).
pub(crate) fn mount_one(
    root: BorrowedFd<'_>,
    m: &Mount,
    new_cgroupns: bool,
    userns: Option<BorrowedFd<'_>>,
) -> Result<(), SetupError> {
    let dest = m.destination();
    let step = format!("mounting {}", dest.display());
    if !dest.is_absolute() {
        return Err(SetupError::new(step, "destination is not absolute"));
    }
    let typ = m.typ().as_deref().unwrap_or("none");
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    if opts.bind || typ == "bind" {
        let source = m
            .source()
            .as_deref()
            .ok_or_else(|| SetupError::new(&step, "bind mount without a source"))?;
        let idmap = userns.filter(|_| opts.idmap);
        return bind(root, source, dest, &opts, idmap).map_err(|e| SetupError::new(step, e));
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return cgroupfs::mount_cgroup(root, dest, opts.flags, new_cgroupns)
            .map_err(|e| SetupError::new(step, e));
    }
    let target = mount_target(root, dest, true).map_err(|e| SetupError::new(&step, e))?;
    let source = m
        .source()
        .as_deref()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(typ));
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(
        Some(&source),
        &proc_fd(target.as_fd()),
        Some(typ),
        opts.flags,
        data,
    )
    .map_err(|e| SetupError::new(&step, e))?;
    if !opts.propagation.is_empty() || opts.recursive_read_only {
        let top =
            reopen_mounted(root, dest, target.as_fd()).map_err(|e| SetupError::new(&step, e))?;
        finish(top.as_fd(), &opts).map_err(|e| SetupError::new(&step, e))?;
    }
    Ok(())
}

/// A bind of host path `source` (symlinks resolved on the host) onto `dest`
/// inside the rootfs, then its read-only state and propagation. With
/// `idmap`, the files' owners are shifted through that user namespace (an
/// owner 0 on disk is the container's root); a filesystem that cannot be
/// idmapped gets the plain bind, its files as their permissions allow.
pub(crate) fn bind(
    root: BorrowedFd<'_>,
    source: &Path,
    dest: &Path,
    opts: &Options,
    idmap: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let source = std::fs::canonicalize(source)
        .map_err(|e| std::io::Error::new(e.kind(), format!("source {}: {e}", source.display())))?;
    let is_dir = source.is_dir();
    let target = mount_target(root, dest, is_dir)?;
    let mut flags = MsFlags::MS_BIND;
    if opts.recursive {
        flags |= MsFlags::MS_REC;
    }
    let idmapped = match idmap {
        None => false,
        Some(ns) => match sys::bind_idmapped(&source, ns, opts.recursive, target.as_fd()) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => false,
            Err(e) => return Err(e),
        },
    };
    if !idmapped {
        mount(
            Some(&source),
            &proc_fd(target.as_fd()),
            None::<&str>,
            flags,
            None::<&str>,
        )?;
    }
    let top = reopen_mounted(root, dest, target.as_fd())?;
    let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if !extra.is_empty() {
        // A bind remount replaces the per-mount flags: keep the source's
        // nosuid/nodev/noexec so a bind never loosens them.
        let locked = locked_flags(&source)?;
        let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked;
        mount(
            None::<&str>,
            &proc_fd(top.as_fd()),
            None::<&str>,
            remount,
            None::<&str>,
        )?;
    }
    finish(top.as_fd(), opts)
}

fn finish(top: BorrowedFd<'_>, opts: &Options) -> std::io::Result<()> {
    if opts.recursive_read_only {
        sys::mount_set_read_only(top, true)?;
    }
    if !opts.propagation.is_empty() {
        mount(
            None::<&str>,
            &proc_fd(top),
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )?;
    }
    Ok(())
}

/// The mount just made on `dest`, found again inside the root, checked to
/// be a different mount from the one `before` was on.
fn reopen_mounted(
    root: BorrowedFd<'_>,
    dest: &Path,
    before: BorrowedFd<'_>,
) -> std::io::Result<OwnedFd> {
    let top = open_in_root(root, dest, OFlag::O_PATH)?;
    if mount_id(top.as_fd())? == mount_id(before)? {
        return Err(std::io::Error::other(
            "mount target changed while mounting (raced by a rename?)",
        ));
    }
    Ok(top)
}

fn locked_flags(path: &Path) -> std::io::Result<MsFlags> {
    let st = statvfs(path)?;
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if st.flags().contains(fs) {
            flags |= ms;
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Options {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_data_and_propagation_are_separated() {
        let o = opts(&["rbind", "ro", "nosuid", "rslave", "mode=755", "size=64k"]);
        assert!(o.bind && o.recursive && !o.recursive_read_only);
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, vec!["mode=755", "size=64k"]);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let o = opts(&["ro", "rw", "rro", "ridmap"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.recursive_read_only && o.idmap);
        assert!(o.data.is_empty());
    }
}
