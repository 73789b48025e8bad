//! The few system calls neither `nix` nor `caps` wrap safely, each behind a
//! safe function whose contract the caller can keep.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::unistd::ForkResult;

/// `fork(2)`, refused unless this process has exactly one thread: only
/// then may the child go on running arbitrary code (allocate, take locks).
pub fn fork_single_threaded() -> io::Result<ForkResult> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork a process with {threads} threads"
        )));
    }
    // SAFETY: the process has a single thread (checked just above, and
    // nothing in this call path starts one), so the child inherits no lock
    // held by another thread and may run any code.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// `struct clone_args` of `<linux/sched.h>` (the fields up to `cgroup`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`fork_single_threaded`], but the child starts as a member of the
/// cgroup v2 directory `cgroup` (`clone3` with `CLONE_INTO_CGROUP`, kernel
/// 5.7+), which skips a `cgroup.procs` write that can stall on an RCU
/// grace period.
pub fn fork_into_cgroup(cgroup: BorrowedFd<'_>) -> io::Result<ForkResult> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork a process with {threads} threads"
        )));
    }
    let fd = u64::try_from(cgroup.as_raw_fd()).map_err(io::Error::other)?;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        // No stack: the child runs on a copy of ours, as after fork(2).
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: fd,
    };
    // SAFETY: the process has a single thread (checked above), so as with
    // fork the child may run any code; `args` outlives the call and its
    // size is passed with it; no stack or tls pointer is handed over.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(ForkResult::Child),
        pid => {
            let pid = i32::try_from(pid).map_err(io::Error::other)?;
            Ok(ForkResult::Parent {
                child: nix::unistd::Pid::from_raw(pid),
            })
        }
    }
}

/// Marks every descriptor from `first` up close-on-exec, so a failed exec
/// can still report on its channel while a successful one leaks nothing.
pub fn close_range_cloexec(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it takes no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct mount_attr` of `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_int = 0x8000;

/// Makes the mount `fd` refers to read-only, with every mount below it
/// when `recursive` (`mount_setattr(2)`; kernel 5.12+).
pub fn mount_set_read_only(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` lives
    // across the call and its size is passed with it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the kernel has `mount_setattr(2)`, which recursive read-only
/// mounts need: asked of an invalid descriptor, a kernel that has it says
/// EBADF, an older one ENOSYS.
pub fn mount_setattr_supported() -> bool {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: as in `mount_set_read_only`; fd -1 makes the call fail before
    // it touches any mount.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// Makes the terminal `fd` the controlling terminal of this session.
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument, no pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setrlimit(2)` by the kernel's resource number.
pub fn set_rlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit that outlives the call.
    let rc = unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, &limit) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The value of extended attribute `name` of `path` (not following a final
/// symlink), or `None` when it is not set.
pub fn lgetxattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let c_name = CString::new(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated and the buffer pointer
        // and length describe memory we own.
        let rc = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Unblocks every signal and resets ignored ones to their default action:
/// a mask and `SIG_IGN` dispositions are inherited across `execve`.
pub fn reset_signals() -> io::Result<()> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code, so no handler can run
        // in an async-signal-unsafe context.
        unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) }?;
    }
    Ok(())
}

/// The names of the extended attributes of `path` (not following a final
/// symlink).
pub fn llistxattr(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: the path is NUL-terminated and the buffer pointer and
        // length describe memory we own.
        let rc = unsafe { libc::llistxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    }
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// Sets extended attribute `name` of `path` (not following a final symlink).
pub fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let c_name = CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and the value pointer and
    // length describe a live slice.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;

/// A detached copy of the mount at `path` (with every mount below it when
/// `recursive`) whose ownership is shifted by the id mappings of the user
/// namespace `userns` (`open_tree(2)` with `OPEN_TREE_CLONE`, then
/// `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`; kernel 5.12+ and a
/// filesystem that supports idmapped mounts). The copy is attached
/// nowhere: it lives as long as the descriptor and whatever (an overlay's
/// lower layer) holds it. An error of kind `Unsupported`: no idmapped
/// mounts here (old kernel, or a filesystem without them).
pub fn open_tree_idmapped(
    path: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> io::Result<OwnedFd> {
    let unsupported = |e: io::Error, codes: &[i32]| {
        if e.raw_os_error().is_some_and(|c| codes.contains(&c)) {
            io::Error::new(io::ErrorKind::Unsupported, e)
        } else {
            e
        }
    };
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is NUL-terminated and outlives the call; the flags
    // ask for a new detached mount, returned as a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c_path.as_ptr(), flags) };
    if fd < 0 {
        return Err(unsupported(io::Error::last_os_error(), &[libc::ENOSYS]));
    }
    let raw = libc::c_int::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: open_tree just returned this descriptor, owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(raw) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).map_err(io::Error::other)?,
    };
    let mut at = libc::AT_EMPTY_PATH;
    if recursive {
        at |= AT_RECURSIVE;
    }
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` lives
    // across the call and its size is passed with it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        let codes = [libc::EINVAL, libc::EOPNOTSUPP, libc::ENOSYS];
        return Err(unsupported(io::Error::last_os_error(), &codes));
    }
    Ok(tree)
}

/// Sets the effective uid and gid of the calling *thread* only (the raw
/// system calls; the libc wrappers change every thread of the process).
/// Going to a non-zero uid sets the gid first (the uid change drops the
/// capability to change it); going back to uid 0 sets the uid first.
pub fn set_thread_effective_ids(uid: u32, gid: u32) -> io::Result<()> {
    let keep = u32::MAX;
    let set_uid = || {
        // SAFETY: setresuid takes integers only; -1 keeps an id unchanged.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, keep, uid, keep) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    let set_gid = || {
        // SAFETY: as for setresuid.
        let rc = unsafe { libc::syscall(libc::SYS_setresgid, keep, gid, keep) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    if uid == 0 {
        set_uid()?;
        set_gid()
    } else {
        set_gid()?;
        set_uid()
    }
}

/// Closes every descriptor from `first` up except `keep`. Only for a
/// process about to exec or exit, whose other descriptors no Rust value
/// still owns (their owners never run their destructors).
pub fn close_fds_from_except(first: u32, keep: BorrowedFd<'_>) -> io::Result<()> {
    let keep = u32::try_from(keep.as_raw_fd()).map_err(io::Error::other)?;
    let ranges = [(first, keep.saturating_sub(1)), (keep + 1, u32::MAX)];
    for (from, to) in ranges {
        if from > to || (from == keep) {
            continue;
        }
        // SAFETY: close_range takes integers only; the caller guarantees
        // nothing owned in this process uses the descriptors it closes.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// [`open_tree_idmapped`] attached onto the directory `target` refers to
/// (`move_mount(2)`, both ends by descriptor).
pub fn bind_idmapped(
    path: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
    target: BorrowedFd<'_>,
) -> io::Result<()> {
    let tree = open_tree_idmapped(path, userns, recursive)?;
    // SAFETY: both paths are the empty NUL-terminated string: the source
    // is the detached tree and the target the directory, by descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
