//! Pod namespaces without a pause process: network, IPC and UTS namespaces are
//! created by a short-lived thread and kept alive by bind-mounting the
//! thread's namespace files onto files in the pod's state directory.
//!
//! Why a thread and not a child process: `unshare(2)` of `CLONE_NEWNET`,
//! `CLONE_NEWUTS` and `CLONE_NEWIPC` only replaces the calling *task's*
//! namespace proxy, so one thread of a multi-threaded process may do it while
//! the others carry on in the host namespaces (unlike `CLONE_NEWUSER`, which
//! needs a single-threaded caller, or `CLONE_NEWNS`, which also unshares the
//! filesystem context). The unit test `unshare_in_a_thread_leaves_the_process_alone`
//! checks exactly that. Everything that must happen *inside* the namespaces
//! (hostname, loopback up, namespaced sysctls) is done by that thread before
//! it exits, which costs no exec and no fork.

#![allow(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// A namespace a pod may hold in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    Net,
    Ipc,
    Uts,
    Pid,
    User,
}

impl NsKind {
    /// The user namespace last: the others are owned by it, so they are
    /// released first.
    pub const ALL: [NsKind; 5] = [
        NsKind::Net,
        NsKind::Ipc,
        NsKind::Uts,
        NsKind::Pid,
        NsKind::User,
    ];

    /// The file name under `/proc/<pid>/ns/`, also used for the pod's ns files.
    pub fn name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Pid => "pid",
            NsKind::User => "user",
        }
    }

    pub(crate) fn flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
            NsKind::User => CloneFlags::CLONE_NEWUSER,
        }
    }
}

/// One sysctl to write inside the new namespaces.
#[derive(Debug, Clone)]
pub struct Sysctl {
    /// The name as the user wrote it, for error messages.
    pub name: String,
    /// Path relative to `/proc/sys`.
    pub path: PathBuf,
    pub value: String,
    /// An IPC sysctl: in a namespace owned by a pod user namespace only
    /// that namespace's root may write it (see [`configure_existing`]).
    pub ipc: bool,
}

/// What [`create`] makes.
#[derive(Debug, Clone)]
pub struct NsRequest {
    /// Directory that receives one file per namespace (`net`, `ipc`, `uts`).
    pub dir: PathBuf,
    /// Namespaces to create; `Pid` is not allowed here (it needs a live init).
    pub kinds: Vec<NsKind>,
    /// Set inside the new UTS namespace (requires `Uts` in `kinds`).
    pub hostname: Option<String>,
    pub sysctls: Vec<Sysctl>,
}

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("a pid namespace cannot be held without a process")]
    PidWithoutProcess,
    #[error("a user namespace cannot be made by a thread")]
    UserFromThread,
    #[error("cannot clone the user namespace creator")]
    CloneUserns(#[source] Errno),
    #[error("cannot write {path}")]
    IdMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot join the {kind} namespace {path}")]
    Join {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot switch the namespace thread to the pod's root {uid}:{gid}")]
    SwitchIds {
        uid: u32,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the namespace thread")]
    Thread(#[source] std::io::Error),
    #[error("the namespace thread panicked")]
    ThreadPanicked,
    #[error("cannot create namespaces ({kinds})")]
    Unshare {
        kinds: String,
        #[source]
        source: Errno,
    },
    #[error("cannot set hostname {hostname:?}")]
    Hostname {
        hostname: String,
        #[source]
        source: Errno,
    },
    #[error("cannot bring up the loopback interface of the pod network namespace")]
    Loopback(#[source] Errno),
    #[error("sysctl {name} does not exist (no /proc/sys/{})", path.display())]
    UnknownSysctl { name: String, path: PathBuf },
    #[error("cannot set sysctl {name}={value:?}")]
    Sysctl {
        name: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create namespace file {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind-mount the {kind} namespace onto {path}")]
    Bind {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot unmount {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The file in `dir` that holds namespace `kind`.
pub fn ns_file(dir: &Path, kind: NsKind) -> PathBuf {
    dir.join(kind.name())
}

/// Creates the requested namespaces in a fresh thread, configures them from
/// inside, and bind-mounts them into `req.dir`. On error nothing is left
/// mounted.
pub fn create(req: NsRequest) -> Result<(), NsError> {
    if req.kinds.contains(&NsKind::Pid) {
        return Err(NsError::PidWithoutProcess);
    }
    if req.kinds.contains(&NsKind::User) {
        return Err(NsError::UserFromThread);
    }
    let handle = std::thread::Builder::new()
        .name("yonggi-ns".to_string())
        .spawn(move || in_new_namespaces(&req))
        .map_err(NsError::Thread)?;
    // The thread exits right after, taking its namespaces with it unless bound.
    handle.join().map_err(|_| NsError::ThreadPanicked)?
}

fn in_new_namespaces(req: &NsRequest) -> Result<(), NsError> {
    let mut flags = CloneFlags::empty();
    for kind in &req.kinds {
        flags |= kind.flag();
    }
    nix::sched::unshare(flags).map_err(|source| NsError::Unshare {
        kinds: req
            .kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(","),
        source,
    })?;
    configure(req, None)?;
    bind_all(req.kinds.iter().copied(), |kind| bind_self(&req.dir, kind))
}

/// Binds each of `kinds` with `bind`; on the first failure releases what
/// was bound before it, so a half-made pod leaves no ns file behind.
pub(super) fn bind_all(
    kinds: impl IntoIterator<Item = NsKind>,
    mut bind: impl FnMut(NsKind) -> Result<PathBuf, NsError>,
) -> Result<(), NsError> {
    let mut bound = Vec::new();
    for kind in kinds {
        match bind(kind) {
            Ok(path) => bound.push(path),
            Err(e) => {
                for path in bound.iter().rev() {
                    let _ = release_file(path);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Configures namespaces that already exist in `req.dir` (made by
/// `userns::create`, owned by a pod user namespace) from a fresh thread
/// that joins them. The daemon, root of the host's user namespace, holds
/// every capability in the pod's, so it may join them and set the hostname,
/// `lo` and net sysctls; an IPC sysctl file though is writable only by the
/// root of the namespace's owner, so those are written with the thread's
/// effective ids switched to `ns_root` (host uid, host gid) and back.
pub fn configure_existing(req: NsRequest, ns_root: (u32, u32)) -> Result<(), NsError> {
    let handle = std::thread::Builder::new()
        .name("yonggi-ns".to_string())
        .spawn(move || {
            for kind in &req.kinds {
                let path = ns_file(&req.dir, *kind);
                let joined = File::open(&path).and_then(|file| {
                    nix::sched::setns(file, kind.flag()).map_err(std::io::Error::from)
                });
                joined.map_err(|source| NsError::Join {
                    kind: kind.name(),
                    path,
                    source,
                })?;
            }
            configure(&req, Some(ns_root))
        })
        .map_err(NsError::Thread)?;
    handle.join().map_err(|_| NsError::ThreadPanicked)?
}

/// Hostname, loopback and sysctls of the calling thread's namespaces.
fn configure(req: &NsRequest, ns_root: Option<(u32, u32)>) -> Result<(), NsError> {
    if req.kinds.contains(&NsKind::Uts)
        && let Some(hostname) = &req.hostname
    {
        nix::unistd::sethostname(hostname).map_err(|source| NsError::Hostname {
            hostname: hostname.clone(),
            source,
        })?;
    }
    if req.kinds.contains(&NsKind::Net) {
        loopback_up().map_err(NsError::Loopback)?;
    }
    for sysctl in &req.sysctls {
        match ns_root {
            Some((uid, gid)) if sysctl.ipc => {
                let switch = |uid, gid| {
                    crate::runtime::sys::set_thread_effective_ids(uid, gid)
                        .map_err(|source| NsError::SwitchIds { uid, gid, source })
                };
                switch(uid, gid)?;
                let written = write_sysctl(sysctl);
                switch(0, 0)?;
                written?;
            }
            _ => write_sysctl(sysctl)?,
        }
    }
    Ok(())
}

/// Writes one sysctl through `/proc/sys`, which resolves `net.*` and the IPC
/// sysctls against the *calling thread's* namespaces.
fn write_sysctl(sysctl: &Sysctl) -> Result<(), NsError> {
    let path = Path::new("/proc/sys").join(&sysctl.path);
    let mut file = match std::fs::OpenOptions::new().write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NsError::UnknownSysctl {
                name: sysctl.name.clone(),
                path: sysctl.path.clone(),
            });
        }
        Err(source) => {
            return Err(NsError::Sysctl {
                name: sysctl.name.clone(),
                value: sysctl.value.clone(),
                source,
            });
        }
    };
    file.write_all(sysctl.value.as_bytes())
        .map_err(|source| NsError::Sysctl {
            name: sysctl.name.clone(),
            value: sysctl.value.clone(),
            source,
        })
}

fn bind_self(dir: &Path, kind: NsKind) -> Result<PathBuf, NsError> {
    let target = ns_file(dir, kind);
    File::create(&target).map_err(|source| NsError::MountPoint {
        path: target.clone(),
        source,
    })?;
    let source = PathBuf::from("/proc/thread-self/ns").join(kind.name());
    if let Err(errno) = nix::mount::mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(&target);
        return Err(NsError::Bind {
            kind: kind.name(),
            path: target,
            source: errno,
        });
    }
    Ok(target)
}

/// Binds the namespace `kind` of process `pid` onto its file in `dir`.
pub fn bind_process_ns(pid: i32, dir: &Path, kind: NsKind) -> Result<PathBuf, NsError> {
    let target = ns_file(dir, kind);
    File::create(&target).map_err(|source| NsError::MountPoint {
        path: target.clone(),
        source,
    })?;
    let source = PathBuf::from(format!("/proc/{pid}/ns/{}", kind.name()));
    if let Err(errno) = nix::mount::mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(&target);
        return Err(NsError::Bind {
            kind: kind.name(),
            path: target,
            source: errno,
        });
    }
    Ok(target)
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> Result<(), Errno> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket and `req` a valid ifreq that outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(rc)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; the kernel only reads `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(rc).map(drop)
}

/// Unmounts and deletes one namespace (or other mount-point) file. What is
/// not mounted or not there is fine: release is idempotent.
pub fn release_file(path: &Path) -> Result<(), NsError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(source) => {
            return Err(NsError::Unmount {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Releases every namespace file in `dir`; the first error is returned after
/// trying them all.
pub fn release_all(dir: &Path) -> Result<(), NsError> {
    let mut first = None;
    for kind in NsKind::ALL {
        if let Err(e) = release_file(&ns_file(dir, kind)) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Whether `path` is a live namespace bind mount (an nsfs file), as opposed
/// to the empty file left behind when the mount vanished (e.g. a reboot).
pub fn is_held(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// The inode of a namespace file: two paths name the same namespace when
/// their inodes are equal (nsfs has one device).
pub fn ns_inode(path: &Path) -> Option<u64> {
    nix::sys::stat::stat(path).ok().map(|s| s.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn require_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn unshare_in_a_thread_leaves_the_process_alone() {
        assert!(require_root(), "namespace tests need root");
        let dir = tempfile::tempdir().expect("tempdir");
        let before: Vec<Option<u64>> = [NsKind::Net, NsKind::Ipc, NsKind::Uts]
            .iter()
            .map(|k| ns_inode(&Path::new("/proc/thread-self/ns").join(k.name())))
            .collect();
        let host_name = nix::unistd::gethostname().expect("hostname");
        let rmid_path = "/proc/sys/kernel/shm_rmid_forced";
        let host_rmid = std::fs::read_to_string(rmid_path).expect("host sysctl");
        let pod_rmid = if host_rmid.trim() == "1" { "0" } else { "1" };
        create(NsRequest {
            dir: dir.path().to_path_buf(),
            kinds: vec![NsKind::Net, NsKind::Ipc, NsKind::Uts],
            hostname: Some("unit-test-pod".to_string()),
            sysctls: vec![Sysctl {
                name: "kernel.shm_rmid_forced".to_string(),
                path: PathBuf::from("kernel/shm_rmid_forced"),
                value: pod_rmid.to_string(),
                ipc: true,
            }],
        })
        .expect("create namespaces");
        for (kind, host_ino) in [NsKind::Net, NsKind::Ipc, NsKind::Uts].iter().zip(&before) {
            let file = ns_file(dir.path(), *kind);
            assert!(is_held(&file), "{} is bound", kind.name());
            assert_ne!(
                ns_inode(&file),
                *host_ino,
                "{} is a new namespace",
                kind.name()
            );
            // This thread, and every thread of the process, kept the host's.
            let now = ns_inode(&Path::new("/proc/thread-self/ns").join(kind.name()));
            assert_eq!(now, *host_ino);
            let process = ns_inode(&Path::new("/proc/self/ns").join(kind.name()));
            assert_eq!(process, *host_ino);
        }
        assert_eq!(nix::unistd::gethostname().expect("hostname"), host_name);
        let uts = ns_file(dir.path(), NsKind::Uts);
        let ipc = ns_file(dir.path(), NsKind::Ipc);
        let (inside_name, inside_rmid) = std::thread::spawn(move || {
            for (path, flag) in [
                (uts, CloneFlags::CLONE_NEWUTS),
                (ipc, CloneFlags::CLONE_NEWIPC),
            ] {
                let file = File::open(path).expect("ns file");
                nix::sched::setns(file, flag).expect("setns");
            }
            (
                nix::unistd::gethostname().expect("hostname"),
                std::fs::read_to_string(rmid_path).expect("pod sysctl"),
            )
        })
        .join()
        .expect("join");
        assert_eq!(inside_name, "unit-test-pod");
        assert_eq!(inside_rmid.trim(), pod_rmid);
        let after = std::fs::read_to_string(rmid_path).expect("host sysctl");
        assert_eq!(after, host_rmid, "host sysctl untouched");
        release_all(dir.path()).expect("release");
        release_all(dir.path()).expect("release twice");
        for kind in NsKind::ALL {
            assert!(!ns_file(dir.path(), kind).exists());
        }
    }

    #[test]
    fn unknown_sysctl_leaves_nothing_mounted() {
        assert!(require_root(), "namespace tests need root");
        let dir = tempfile::tempdir().expect("tempdir");
        let err = create(NsRequest {
            dir: dir.path().to_path_buf(),
            kinds: vec![NsKind::Net, NsKind::Uts],
            hostname: None,
            sysctls: vec![Sysctl {
                name: "net.ipv4.no_such_thing".to_string(),
                path: PathBuf::from("net/ipv4/no_such_thing"),
                value: "1".to_string(),
                ipc: false,
            }],
        })
        .expect_err("unknown sysctl");
        assert!(matches!(err, NsError::UnknownSysctl { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
