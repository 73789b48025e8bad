//! The monitor's side of starting a container: the PID namespace (which
//! applies to the next fork), the fork, and the two-step handshake.
//!
//! Must be called from a single-threaded process (the monitor): the child
//! runs arbitrary code between fork and exec.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::channel::{Channel, FromInit, SetupError, ToInit};
use super::init::{self, Init, InitStdio};
use super::sys;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("entering the PID namespace {path}")]
    PidNamespace {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("forking the container init")]
    Fork(#[source] std::io::Error),
    #[error("talking to the container init")]
    Channel(#[source] std::io::Error),
    #[error("container setup failed")]
    Setup(#[source] SetupError),
    #[error("the container init exited during setup")]
    InitDied,
}

/// A forked init, set up and waiting for [`start`].
#[derive(Debug)]
pub struct Created {
    pub pid: Pid,
    channel: Channel,
    /// The master of the console the init allocated (a terminal only).
    terminal: Option<OwnedFd>,
}

/// Where the init's cgroups are.
#[derive(Debug, Default)]
pub struct CgroupJoin<'a> {
    /// A cgroup v2 directory the init is created in (`clone3` with
    /// `CLONE_INTO_CGROUP`).
    pub clone_into: Option<BorrowedFd<'a>>,
    /// Directories whose `cgroup.procs` the init writes (v1 hierarchies, or
    /// v2 where `clone_into` is not used).
    pub dirs: &'a [PathBuf],
}

/// Forks the init of `spec` into `cgroups` and waits until its setup is
/// done or failed.
pub fn create(
    spec: &Spec,
    cgroups: CgroupJoin<'_>,
    stdio: InitStdio,
) -> Result<Created, SpawnError> {
    enter_pid_namespace(spec)?;
    let (ours, theirs) = Channel::pair().map_err(SpawnError::Channel)?;
    let forked = match cgroups.clone_into {
        Some(fd) => sys::fork_into_cgroup(fd),
        None => sys::fork_single_threaded(),
    };
    let cgroup_dirs = cgroups.dirs;
    match forked.map_err(SpawnError::Fork)? {
        ForkResult::Child => {
            drop(ours);
            init::run(Init {
                spec,
                cgroup_dirs,
                stdio,
                channel: theirs,
            })
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            drop(stdio);
            let mut terminal = None;
            loop {
                let message = ours
                    .recv_with_fd::<FromInit>()
                    .map_err(SpawnError::Channel)?;
                match message {
                    Some((FromInit::Terminal, Some(fd))) if terminal.is_none() => {
                        terminal = Some(fd);
                    }
                    Some((FromInit::Created, _)) => {
                        return Ok(Created {
                            pid: child,
                            channel: ours,
                            terminal,
                        });
                    }
                    Some((FromInit::Failed(e), _)) => return Err(SpawnError::Setup(e)),
                    Some((FromInit::Terminal, _)) => {
                        return Err(SpawnError::Channel(std::io::Error::other(
                            "the init sent no terminal, or two",
                        )));
                    }
                    None => return Err(SpawnError::InitDied),
                }
            }
        }
    }
}

/// Lets the init exec; returns once the exec happened (the init's end of
/// the channel closed) or failed.
pub fn start(created: Created) -> Result<Pid, SpawnError> {
    created
        .channel
        .send(&ToInit::Start)
        .map_err(SpawnError::Channel)?;
    match created
        .channel
        .recv::<FromInit>()
        .map_err(SpawnError::Channel)?
    {
        None => Ok(created.pid),
        Some(FromInit::Failed(e)) => Err(SpawnError::Setup(e)),
        Some(FromInit::Created | FromInit::Terminal) => Err(SpawnError::Channel(
            std::io::Error::other("unexpected message from the init"),
        )),
    }
}

impl Created {
    /// The master of the container's console, once (a terminal only).
    pub fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.terminal.take()
    }

    /// The descriptor to poll: readable when the init died before start.
    pub fn channel_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.channel.as_fd()
    }
}

/// A PID namespace given by path is joined, one without a path created; in
/// both cases only the next fork (the init) lands in it.
fn enter_pid_namespace(spec: &Spec) -> Result<(), SpawnError> {
    let pid_ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|list| list.iter().find(|n| n.typ() == LinuxNamespaceType::Pid));
    let Some(ns) = pid_ns else {
        return Ok(());
    };
    let path = ns.path().clone().unwrap_or_default();
    let err = |source| SpawnError::PidNamespace {
        path: path.clone(),
        source,
    };
    match ns.path() {
        Some(p) => {
            let fd = open(
                p.as_path(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?;
            setns(fd, CloneFlags::CLONE_NEWPID).map_err(err)
        }
        None => unshare(CloneFlags::CLONE_NEWPID).map_err(err),
    }
}
