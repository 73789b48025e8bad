//! The overlayfs mount of a snapshot.
//!
//! The mount data of `mount(2)` is limited to one page (4096 bytes), and
//! `lowerdir=` lists every layer. Absolute layer paths under a daemon root
//! run ~100 bytes each, so past roughly 35 layers the string no longer fits.
//! Then each layer is opened `O_PATH` and named `/proc/self/fd/<n>` (~17
//! bytes), which overlayfs resolves like any path at mount time and no
//! longer needs afterwards: that fits ~230 layers, more than overlayfs'
//! own limit of 500 is never reached by real images (docker caps at 127).
//! The short form is only used when needed, so `mountinfo` shows readable
//! paths in the common case. (A chdir to a common parent with relative
//! paths would work too, but the cwd is process-wide in a threaded daemon.)

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, umount2};
use nix::sys::stat::Mode;

use super::{Kind, SnapshotError, io_err};

const MOUNT_DATA_MAX: usize = 4095;

/// Mounts the overlay of `layers` (lowest first) at `dir/rootfs`, with
/// `dir/upper` and `dir/work` unless `read_only`.
pub(super) fn mount(
    dir: &Path,
    layers: &[PathBuf],
    read_only: bool,
) -> Result<Kind, SnapshotError> {
    let rootfs = dir.join("rootfs");
    if read_only && layers.len() == 1 {
        // overlayfs wants two lower dirs when there is no upper: a single
        // layer is a read-only bind of itself.
        bind_read_only(&layers[0], &rootfs)?;
        return Ok(Kind::OverlayReadOnly);
    }
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    if !read_only {
        for d in [&upper, &work] {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", d)(e)),
            }
        }
    }
    let upper_work = (!read_only).then_some((&upper, &work));
    let mut options = build_options(layers, upper_work, |p| Ok(p.display().to_string()))?;
    // Held until the mount is done: the /proc/self/fd names point at them.
    let mut held: Vec<OwnedFd> = Vec::new();
    if options.len() > MOUNT_DATA_MAX {
        options = build_options(layers, upper_work, |p| {
            let fd = open(
                p,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("opening", p)(e.into()))?;
            let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
            held.push(fd);
            Ok(name)
        })?;
        if options.len() > MOUNT_DATA_MAX {
            return Err(SnapshotError::TooManyLayers {
                layers: layers.len(),
            });
        }
    }
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount_overlay(&rootfs, flags, &options, !read_only)?;
    drop(held);
    Ok(if read_only {
        Kind::OverlayReadOnly
    } else {
        Kind::Overlay
    })
}

/// A writable overlay whose lower layers are idmapped through `idmap`'s
/// user namespace (detached `open_tree` clones, named by descriptor; the
/// overlay keeps them once mounted) and whose upper dir belongs to the
/// namespace's root, so the container's root owns `/` and the image's
/// files as the image says, and what it writes lands owned by its host ids.
pub(super) fn mount_idmapped(
    dir: &Path,
    layers: &[PathBuf],
    idmap: &super::Idmap,
) -> Result<Kind, SnapshotError> {
    let rootfs = dir.join("rootfs");
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for d in [&upper, &work] {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("creating", d)(e)),
        }
    }
    std::os::unix::fs::chown(&upper, Some(idmap.uid.host(0)), Some(idmap.gid.host(0)))
        .map_err(io_err("chowning", &upper))?;
    let userns = fs::File::open(&idmap.userns).map_err(io_err("opening", &idmap.userns))?;
    let mut held: Vec<OwnedFd> = Vec::new();
    let options = build_options(layers, Some((&upper, &work)), |p| {
        if p == upper.as_path() || p == work.as_path() {
            return Ok(p.display().to_string());
        }
        let tree = crate::runtime::sys::open_tree_idmapped(p, userns.as_fd(), false).map_err(
            |source| SnapshotError::Idmap {
                path: p.to_path_buf(),
                source,
            },
        )?;
        let name = format!("/proc/self/fd/{}", tree.as_raw_fd());
        held.push(tree);
        Ok(name)
    })?;
    if options.len() > MOUNT_DATA_MAX {
        return Err(SnapshotError::TooManyLayers {
            layers: layers.len(),
        });
    }
    mount_overlay(&rootfs, MsFlags::empty(), &options, true)?;
    drop(held);
    Ok(Kind::Overlay)
}

/// Mounts a writable overlay `volatile` (Linux 5.10+): overlayfs then
/// skips syncing the upper filesystem, above all the sync_filesystem of
/// the unmount, which cost tens of milliseconds of every RemoveContainer.
/// A container's writes never outlive a reboot (no container survives
/// one), so the only thing lost is a durability nobody can use; after a
/// crash the kernel refuses to mount that upper dir again, which is the
/// honest answer for writes that may be torn. An older kernel refuses the
/// option: the plain mount follows.
fn mount_overlay(
    rootfs: &Path,
    flags: MsFlags,
    options: &str,
    writable: bool,
) -> Result<(), SnapshotError> {
    let plain = || {
        nix::mount::mount(
            Some("overlay"),
            rootfs,
            Some("overlay"),
            flags,
            Some(options),
        )
    };
    let result = if writable && options.len() + VOLATILE.len() <= MOUNT_DATA_MAX {
        let volatile = format!("{options}{VOLATILE}");
        match nix::mount::mount(
            Some("overlay"),
            rootfs,
            Some("overlay"),
            flags,
            Some(volatile.as_str()),
        ) {
            Err(nix::Error::EINVAL) => plain(),
            other => other,
        }
    } else {
        plain()
    };
    result.map_err(|source| SnapshotError::Mount {
        path: rootfs.to_path_buf(),
        options: options.to_string(),
        source,
    })
}

const VOLATILE: &str = ",volatile";

/// overlayfs marks the work dir of a `volatile` mount and refuses to
/// mount it again while the mark is there. After an unmount of a running
/// system (not a crash) the upper dir is whole, so the mark goes.
pub(super) fn clear_volatile_mark(dir: &Path) -> Result<(), SnapshotError> {
    let mark = dir.join("work/work/incompat/volatile");
    match fs::remove_dir_all(&mark) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", &mark)(e)),
    }
}

fn build_options(
    layers: &[PathBuf],
    upper_work: Option<(&PathBuf, &PathBuf)>,
    mut name: impl FnMut(&Path) -> Result<String, SnapshotError>,
) -> Result<String, SnapshotError> {
    let mut lower = Vec::with_capacity(layers.len());
    // overlayfs lists the top layer first.
    for layer in layers.iter().rev() {
        lower.push(escape(&name(layer)?));
    }
    let mut options = format!("lowerdir={}", lower.join(":"));
    if let Some((upper, work)) = upper_work {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            escape(&name(upper)?),
            escape(&name(work)?)
        ));
    }
    Ok(options)
}

/// overlayfs splits lowerdir on `:` and options on `,`; both are escaped
/// with a backslash.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn bind_read_only(source: &Path, target: &Path) -> Result<(), SnapshotError> {
    let err = |source| SnapshotError::Mount {
        path: target.to_path_buf(),
        options: "bind,ro".to_string(),
        source,
    };
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err)?;
    let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
        let _ = umount2(target, MntFlags::MNT_DETACH);
        return Err(err(e));
    }
    Ok(())
}

/// Unmounts `path`; nothing mounted there (or no such path) is success.
pub(super) fn unmount(path: &Path) -> Result<(), SnapshotError> {
    loop {
        match umount2(path, MntFlags::MNT_DETACH) {
            // A rootfs could carry stacked mounts: unmount until none is left.
            Ok(()) => continue,
            Err(nix::Error::EINVAL | nix::Error::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(SnapshotError::Unmount {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Whether something is mounted exactly at `path` (by `/proc/self/mountinfo`).
pub(super) fn is_mounted(path: &Path) -> Result<bool, SnapshotError> {
    let info = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(info).map_err(io_err("reading", info))?;
    Ok(mount_points(&text).any(|p| Path::new(&p) == path))
}

/// The mount points in a mountinfo text, with `\NNN` octal escapes decoded.
pub(crate) fn mount_points(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
}

pub(crate) fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            let octal = std::str::from_utf8(digits).ok();
            if let Some(v) = octal.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_lists_the_top_layer_first_and_escapes_separators() {
        let layers = vec![PathBuf::from("/l/base"), PathBuf::from("/l/a:b,c")];
        let (u, w) = (PathBuf::from("/s/upper"), PathBuf::from("/s/work"));
        let text = build_options(&layers, Some((&u, &w)), |p| Ok(p.display().to_string()))
            .expect("options");
        assert_eq!(
            text,
            "lowerdir=/l/a\\:b\\,c:/l/base,upperdir=/s/upper,workdir=/s/work"
        );
    }

    #[test]
    fn mountinfo_octal_escapes_are_decoded() {
        let line = "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n";
        assert_eq!(
            mount_points(line).collect::<Vec<_>>(),
            vec!["/mnt/with space"]
        );
    }
}
