//! Terminals of a container's own devpts instance: a container's console
//! (allocated by its init, after `pivot_root`) and an exec's pty (opened
//! by the daemon through `/proc/<init>/root`) both come from there, so the
//! process finds its terminal under `/dev/pts` as it would under runc.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::{SFlag, fstat, major, minor};
use rustix::pty::OpenptFlags;

/// A new pty of the devpts whose multiplexer is `dev/ptmx` under `root`
/// (resolved inside it: a link out of the root is not followed out).
/// Returns (master, replica), both close-on-exec; the master is
/// non-blocking, so that whatever the container put there cannot hang the
/// opener, and the replica is taken from the master (`TIOCGPTPEER`), never
/// looked up by name.
pub fn open_in_root(root: BorrowedFd<'_>) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let master = super::path::open_in_root(root, Path::new("dev/ptmx"), flags)?;
    let st = fstat(&master)?;
    let dev = st.st_rdev;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFCHR
        || major(dev) != 5
        || minor(dev) != 2
    {
        return Err(io::Error::other(
            "the container's /dev/ptmx is not the pty multiplexer",
        ));
    }
    rustix::pty::unlockpt(&master)?;
    let replica = rustix::pty::ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?;
    Ok((master, replica))
}
