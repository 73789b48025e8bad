//! The typed channel between the monitor and the container init it forked:
//! a `SOCK_SEQPACKET` socketpair (one message per packet, so no framing),
//! JSON-encoded enums, one direction per message type.
//!
//! ```text
//! init ──Created──────────► monitor     setup done, waiting to exec
//! init ◄──Start──────────── monitor     go
//! init ──Terminal + fd─────► monitor     (tty only, before Created) the
//!                                        console's master, SCM_RIGHTS
//! init ──Failed(error)────► monitor     a setup step or the exec failed
//! EOF                                   the exec succeeded (CLOEXEC end)
//! ```

#![allow(unsafe_code)]

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

/// A failed step of the container's setup, as the init reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{step}: {message}")]
pub struct SetupError {
    /// What was being done, e.g. `mounting /proc`.
    pub step: String,
    /// The cause, with the errno text where there is one.
    pub message: String,
}

impl SetupError {
    pub fn new(step: impl Into<String>, cause: impl std::fmt::Display) -> SetupError {
        SetupError {
            step: step.into(),
            message: cause.to_string(),
        }
    }
}

/// Init → monitor.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromInit {
    Created,
    Failed(SetupError),
    /// Carries the master of the console the init allocated in the
    /// container's devpts.
    Terminal,
}

/// Monitor → init.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToInit {
    Start,
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

const MAX_MESSAGE: usize = 8192;

impl Channel {
    /// Both ends, close-on-exec.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn send<T: Serialize>(&self, message: &T) -> io::Result<()> {
        self.send_inner(message, None)
    }

    /// Sends `message` with a duplicate of `fd` attached (`SCM_RIGHTS`).
    pub fn send_with_fd<T: Serialize>(&self, message: &T, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.send_inner(message, Some(fd))
    }

    fn send_inner<T: Serialize>(&self, message: &T, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::other("channel message too long"));
        }
        let iov = [IoSlice::new(&bytes)];
        let fds = fd.map(|fd| [fd.as_raw_fd()]);
        let cmsgs: &[ControlMessage<'_>] = match &fds {
            Some(fds) => &[ControlMessage::ScmRights(fds)],
            None => &[],
        };
        loop {
            match sendmsg::<()>(
                self.0.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next message, or `None` at end of file (the peer closed its end,
    /// or exec'd). A descriptor sent along is closed.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> io::Result<Option<T>> {
        Ok(self.recv_with_fd()?.map(|(message, _)| message))
    }

    /// The next message and the descriptor sent with it, if any (received
    /// close-on-exec).
    pub fn recv_with_fd<T: for<'de> Deserialize<'de>>(
        &self,
    ) -> io::Result<Option<(T, Option<OwnedFd>)>> {
        let mut buf = [0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (n, fd, truncated) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fd = None;
                    for cmsg in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(fds) = cmsg {
                            for raw in fds {
                                // SAFETY: the kernel just installed `raw` in
                                // this process for this message; nothing
                                // else owns it. Extra ones are closed here.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                    break (msg.bytes, fd, truncated);
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if truncated {
            return Err(io::Error::other("channel message's descriptors truncated"));
        }
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(|message| Some((message, fd)))
            .map_err(io::Error::other)
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
