//! A pod's user namespace and the namespaces it owns.
//!
//! A namespace is owned by the user namespace of the task that creates it,
//! and what a container's root may do in its network namespace (bind a low
//! port, open a raw socket) is decided by that owner. So the pod's network,
//! IPC and UTS namespaces must be made *inside* the pod's user namespace.
//! A thread of the multi-threaded daemon cannot enter a user namespace, so
//! [`create`] clones a short-lived child with `CLONE_NEWUSER` and the other
//! flags at once (the kernel makes the user namespace first and the others
//! owned by it). The child only waits on a pipe and never execs, so it
//! needs no identity inside; the daemon writes `uid_map`/`gid_map` from the
//! parent side (it is privileged there, so `setgroups` stays allowed), binds
//! the child's namespace files into the pod's `ns/` directory, and closes
//! the pipe, which ends the child.
//!
//! The PID namespace is not made here: the pod's `pod-init` holder keeps
//! making it from the host's user namespace (see ARCHITECTURE.md: the
//! container's rootfs is set up from there too, and only its process enters
//! the pod's user namespace).

#![allow(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::namespace::{NsError, NsKind, bind_process_ns};

/// One contiguous range: `size` ids from `container_id` inside map to
/// `host_id` and up outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

impl IdMap {
    fn line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.size)
    }
}

/// What [`create`] makes.
#[derive(Debug, Clone)]
pub struct UsernsRequest {
    /// Receives `user` and one file per kind in `kinds`.
    pub dir: PathBuf,
    pub uid: IdMap,
    pub gid: IdMap,
    /// Net, IPC and/or UTS: owned by the new user namespace.
    pub kinds: Vec<NsKind>,
}

/// Whether this kernel lets the daemon make user namespaces (kubelet asks
/// through the runtime handler features before it sends mappings).
pub fn supported() -> bool {
    std::path::Path::new("/proc/self/ns/user").exists()
        && std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|max| max > 0)
}

/// Enough for the callback, which only reads a pipe and exits.
const CHILD_STACK: usize = 16 * 1024;

/// Makes the user namespace and `kinds` owned by it, writes its mappings,
/// and binds them all into `req.dir`. On error nothing is left mounted.
pub fn create(req: &UsernsRequest) -> Result<(), NsError> {
    if req
        .kinds
        .iter()
        .any(|k| matches!(k, NsKind::Pid | NsKind::User))
    {
        return Err(NsError::PidWithoutProcess);
    }
    let mut flags = CloneFlags::CLONE_NEWUSER;
    for kind in &req.kinds {
        flags |= kind.flag();
    }
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| NsError::Thread(std::io::Error::from(e)))?;
    let (read_fd, write_fd) = (read_end.as_raw_fd(), write_end.as_raw_fd());
    let mut stack = vec![0u8; CHILD_STACK];
    // The child of a multi-threaded process may only make async-signal-safe
    // calls: close, read and _exit on descriptors prepared above.
    let callback = Box::new(move || -> isize {
        // SAFETY: raw system calls on integers and a stack buffer; nothing
        // allocates or takes a lock.
        unsafe {
            libc::close(write_fd);
            let mut byte = 0u8;
            loop {
                let n = libc::read(read_fd, (&raw mut byte).cast(), 1);
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            libc::_exit(0)
        }
    });
    // SAFETY: the callback only makes the raw calls above and the stack is
    // large enough for them; SIGCHLD makes the child waitable.
    let pid = unsafe { nix::sched::clone(callback, &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(NsError::CloneUserns)?;
    drop(read_end);
    let result = hold(req, pid);
    // EOF on the pipe ends the child, whether or not the binds succeeded.
    drop(write_end);
    while let Err(Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
    result
}

fn hold(req: &UsernsRequest, pid: Pid) -> Result<(), NsError> {
    for (file, map) in [("uid_map", req.uid), ("gid_map", req.gid)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        // One write: the kernel accepts a map only once, whole.
        File::options()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(map.line().as_bytes()))
            .map_err(|source| NsError::IdMap { path, source })?;
    }
    let kinds = std::iter::once(NsKind::User).chain(req.kinds.iter().copied());
    super::namespace::bind_all(kinds, |kind| bind_process_ns(pid.as_raw(), &req.dir, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::namespace::{is_held, ns_file, ns_inode, release_all};

    #[test]
    fn namespaces_are_owned_by_the_new_user_namespace() {
        assert!(nix::unistd::geteuid().is_root(), "userns tests need root");
        let dir = tempfile::tempdir().expect("tempdir");
        let map = IdMap {
            container_id: 0,
            host_id: 200_000,
            size: 65536,
        };
        create(&UsernsRequest {
            dir: dir.path().to_path_buf(),
            uid: map,
            gid: map,
            kinds: vec![NsKind::Net, NsKind::Ipc, NsKind::Uts],
        })
        .expect("create");
        let user = ns_file(dir.path(), NsKind::User);
        assert!(is_held(&user));
        assert_ne!(
            ns_inode(&user),
            ns_inode(std::path::Path::new("/proc/self/ns/user"))
        );
        for kind in [NsKind::Net, NsKind::Ipc, NsKind::Uts] {
            let file = File::open(ns_file(dir.path(), kind)).expect("ns file");
            // NS_GET_USERNS: the owner of the namespace, as a new descriptor.
            // SAFETY: the ioctl takes no argument and returns a new fd.
            let owner = unsafe { libc::ioctl(file.as_raw_fd(), 0xb701) };
            assert!(
                owner >= 0,
                "NS_GET_USERNS: {}",
                std::io::Error::last_os_error()
            );
            let owner_ino = ns_inode(&PathBuf::from(format!("/proc/self/fd/{owner}")));
            // SAFETY: closing the descriptor the ioctl returned.
            unsafe { libc::close(owner) };
            assert_eq!(owner_ino, ns_inode(&user), "{} owner", kind.name());
        }
        release_all(dir.path()).expect("release");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
