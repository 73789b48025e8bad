//! The typed channel between the monitor and the container init it forked:
//! a `SOCK_SEQPACKET` socketpair (one message per packet, so no framing),
//! JSON-encoded enums, one direction per message type.
//!
//! ```text
//! init ──Created──────────► monitor     setup done, waiting to exec
//! init ◄──Start──────────── monitor     go
//! init ──Failed(error)────► monitor     a setup step or the exec failed
//! EOF                                   the exec succeeded (CLOEXEC end)
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
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
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::other("channel message too long"));
        }
        loop {
            match send(self.0.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next message, or `None` at end of file (the peer closed its end,
    /// or exec'd).
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> io::Result<Option<T>> {
        let mut buf = [0u8; MAX_MESSAGE];
        let n = loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => break n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(io::Error::other)
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
