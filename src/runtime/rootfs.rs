//! The container's filesystem view, built inside its new mount namespace:
//! propagation of `/`, the rootfs bound onto itself, the spec's mounts and
//! devices, `pivot_root`, then masked and read-only paths and a read-only
//! root.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::Spec;

use super::channel::SetupError;
use super::devices;
use super::mounts::{mount_one, propagation};
use super::path::{open_in_root, proc_fd};
use super::sys;

fn step<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SetupError + '_ {
    move |e| SetupError::new(what, e)
}

/// Everything up to and including `pivot_root`.
pub(crate) fn build(spec: &Spec, rootfs: &Path, new_cgroupns: bool) -> Result<(), SetupError> {
    let linux = spec.linux().as_ref();
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("rslave");
    let flags = propagation(prop)
        .ok_or_else(|| SetupError::new("rootfs propagation", format!("unknown mode {prop:?}")))?;
    // Recursive in every case: host mounts must not see our mounts unless
    // the spec says shared.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        flags | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step("setting propagation of /"))?;
    if flags.contains(MsFlags::MS_SHARED) {
        // pivot_root refuses a shared current root or new-root parent; the
        // submounts (the volumes) keep their shared peers.
        for path in [Path::new("/"), rootfs] {
            mount(
                None::<&str>,
                path,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(step("making the rootfs parent private"))?;
        }
    }
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step("binding the rootfs"))?;
    let root = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("opening the rootfs"))?;
    let ids = PodIds::of(spec);
    // Opened by the host's root, before anything is joined.
    let userns = user_namespace_fd(spec)?;
    let mut dev_is_bind = false;
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let owned = ids.map(|ids| ids.mount(m));
        let m = owned.as_ref().unwrap_or(m);
        if m.destination() == Path::new("/dev") {
            dev_is_bind = m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind");
        }
        mount_one(
            root.as_fd(),
            m,
            new_cgroupns,
            userns.as_ref().map(|fd| fd.as_fd()),
        )?;
    }
    if !dev_is_bind {
        let mut nodes = devices::defaults();
        let spec_devices = linux
            .and_then(|l| l.devices().as_deref())
            .unwrap_or_default();
        nodes.extend(spec_devices.iter().filter_map(devices::from_spec));
        if let Some(ids) = ids {
            for node in &mut nodes {
                node.uid = ids.uid(node.uid);
                node.gid = ids.gid(node.gid);
            }
        }
        for node in &nodes {
            devices::create(root.as_fd(), node)?;
        }
        devices::symlinks(root.as_fd())?;
    }
    drop(root);
    enter(rootfs)
}

/// The host ids of a container in a user namespace (the spec's first uid
/// and gid mapping). The rootfs is built from the host's user namespace,
/// so what it creates for the container — the `/dev` tmpfs, its device
/// nodes, `devpts` — is given to these ids, or the container's root would
/// see them owned by `nobody`.
#[derive(Clone, Copy)]
pub(super) struct PodIds {
    uid: (u32, u32, u32),
    gid: (u32, u32, u32),
}

impl PodIds {
    pub(super) fn of(spec: &Spec) -> Option<PodIds> {
        let linux = spec.linux().as_ref()?;
        let first = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
            m.as_ref()?
                .first()
                .map(|m| (m.container_id(), m.host_id(), m.size()))
        };
        Some(PodIds {
            uid: first(linux.uid_mappings())?,
            gid: first(linux.gid_mappings())?,
        })
    }

    fn map((container, host, size): (u32, u32, u32), id: u32) -> u32 {
        match id.checked_sub(container) {
            Some(offset) if offset < size => host.saturating_add(offset),
            // Outside the range: the overflow id, as the kernel shows it.
            _ => 65534,
        }
    }

    pub(super) fn uid(&self, id: u32) -> u32 {
        PodIds::map(self.uid, id)
    }

    fn gid(&self, id: u32) -> u32 {
        PodIds::map(self.gid, id)
    }

    /// A tmpfs owned by the container's root, a devpts whose `gid=` is the
    /// container's; other mounts as they are.
    fn mount(&self, m: &oci_spec::runtime::Mount) -> oci_spec::runtime::Mount {
        let mut m = m.clone();
        let typ = m.typ().clone().unwrap_or_default();
        let mut options = m.options().clone().unwrap_or_default();
        match typ.as_str() {
            "tmpfs" => {
                if !options.iter().any(|o| o.starts_with("uid=")) {
                    options.push(format!("uid={}", self.uid(0)));
                }
                if !options.iter().any(|o| o.starts_with("gid=")) {
                    options.push(format!("gid={}", self.gid(0)));
                }
            }
            "devpts" => {
                for o in &mut options {
                    if let Some(gid) = o.strip_prefix("gid=").and_then(|g| g.parse().ok()) {
                        *o = format!("gid={}", self.gid(gid));
                    }
                }
            }
            _ => return m,
        }
        m.set_options(Some(options));
        m
    }
}

/// The user namespace the spec joins, for idmapped binds.
fn user_namespace_fd(spec: &Spec) -> Result<Option<OwnedFd>, SetupError> {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|list| {
            list.iter()
                .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        })
        .and_then(|n| n.path().clone());
    let Some(path) = path else {
        return Ok(None);
    };
    open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map(Some)
        .map_err(|e| SetupError::new(format!("opening namespace {}", path.display()), e))
}

fn enter(rootfs: &Path) -> Result<(), SetupError> {
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let old = open("/", dir_flags, Mode::empty()).map_err(step("opening /"))?;
    let new = open(rootfs, dir_flags, Mode::empty()).map_err(step("opening the rootfs"))?;
    fchdir(new.as_fd()).map_err(step("entering the rootfs"))?;
    match pivot_root(".", ".") {
        Ok(()) => {}
        Err(nix::Error::EINVAL) if on_initramfs() => return move_root(),
        Err(e) => return Err(SetupError::new("pivot_root", e)),
    }
    // The old root is now stacked under the new one at ".": detach it,
    // slave first so the unmount does not travel to the host.
    fchdir(old.as_fd()).map_err(step("entering the old root"))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step("making the old root a slave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the old root"))?;
    chdir("/").map_err(step("entering /"))
}

/// The initial ramfs cannot be pivoted away from; there the rootfs is
/// moved over `/` and chrooted into, as runc's no-pivot mode does.
const RAMFS_MAGIC: i64 = 0x8584_58f6;

fn on_initramfs() -> bool {
    nix::sys::statfs::statfs("/")
        .map(|s| s.filesystem_type().0 == RAMFS_MAGIC)
        .unwrap_or(false)
}

fn move_root() -> Result<(), SetupError> {
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(step("moving the rootfs onto /"))?;
    chroot(".").map_err(step("chroot"))?;
    chdir("/").map_err(step("entering /"))
}

/// After `pivot_root`: masked paths, read-only paths, read-only root.
pub(crate) fn finish(spec: &Spec) -> Result<(), SetupError> {
    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("opening /"))?;
    if let Some(linux) = spec.linux() {
        for path in linux.masked_paths().iter().flatten() {
            mask(&root, Path::new(path))?;
        }
        for path in linux.readonly_paths().iter().flatten() {
            read_only(&root, Path::new(path))?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        sys::mount_set_read_only(root.as_fd(), false).map_err(step("making / read-only"))?;
    }
    Ok(())
}

fn mask(root: &OwnedFd, path: &Path) -> Result<(), SetupError> {
    let what = format!("masking {}", path.display());
    let target = match open_in_root(root.as_fd(), path, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(e) => return Err(SetupError::new(what, e)),
    };
    let is_dir = nix::sys::stat::fstat(target.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(|e| SetupError::new(&what, e))?;
    let result = if is_dir {
        mount(
            Some("tmpfs"),
            &proc_fd(target.as_fd()),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            &proc_fd(target.as_fd()),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.map_err(|e| SetupError::new(what, e))
}

fn read_only(root: &OwnedFd, path: &Path) -> Result<(), SetupError> {
    let what = format!("making {} read-only", path.display());
    let target = match open_in_root(root.as_fd(), path, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(e) => return Err(SetupError::new(what, e)),
    };
    let name = proc_fd(target.as_fd());
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(&name), &name, None::<&str>, bind, None::<&str>)
        .map_err(|e| SetupError::new(&what, e))?;
    let top =
        open_in_root(root.as_fd(), path, OFlag::O_PATH).map_err(|e| SetupError::new(&what, e))?;
    sys::mount_set_read_only(top.as_fd(), true).map_err(|e| SetupError::new(what, e))
}
