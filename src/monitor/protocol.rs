//! The control socket of a monitor (`ctl.sock` in the state dir): one JSON
//! request line, one JSON response line, per connection. `Wait` answers
//! when the container exits, so a stop never polls.
//!
//! `Attach` is the exception: once answered `Ok`, the connection stays open
//! and carries [`frame`]s both ways until the container exits (the monitor
//! sends `EXIT` and closes) or the daemon hangs up (a detach).

use serde::{Deserialize, Serialize};

use super::ExitStatus;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Let the created init exec.
    Start,
    /// Send a signal to the init (nothing if it has exited).
    Kill { signal: i32 },
    /// Answer when the init has exited.
    Wait,
    /// Reopen the log file at its path.
    ReopenLog,
    /// The init's pid and whether it was started.
    State,
    /// Stream the live output from now on; with `stdin`, this session's
    /// stdin frames go to the container's stdin.
    Attach { stdin: bool },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Ok,
    Exited(ExitStatus),
    /// A setup step or the exec failed (the init is gone).
    SetupFailed {
        step: String,
        message: String,
    },
    State(MonitorState),
    Error(String),
}

/// A live monitor's view of its container (for the daemon's recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    pub init_pid: i32,
    /// Start succeeded: the init exec'd the container's process.
    pub started: bool,
}

/// What a starting monitor writes to its launcher on its stdout.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    Created { monitor_pid: i32, init_pid: i32 },
    Failed { step: String, message: String },
}

/// The frames of an attach connection: a kind byte, the payload length as a
/// big-endian `u32`, the payload. Output carries what the monitor read (at
/// most [`frame::MAX_PAYLOAD`] at a time), input what the client sends.
pub mod frame {
    /// Container output, monitor → daemon.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// The container has exited and all its output was sent; nothing follows.
    pub const EXIT: u8 = 3;
    /// Bytes for the container's stdin, daemon → monitor.
    pub const STDIN: u8 = 11;
    /// This session's stdin ended (with `stdin_once`, the container's does).
    pub const STDIN_END: u8 = 12;
    /// A terminal size: width and height as big-endian `u16`s.
    pub const RESIZE: u8 = 13;

    pub const HEADER: usize = 5;
    /// The largest payload either side sends; more is a protocol error.
    pub const MAX_PAYLOAD: usize = 32 * 1024;

    pub fn header(kind: u8, len: usize) -> [u8; HEADER] {
        let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        [kind, len[0], len[1], len[2], len[3]]
    }

    /// The kind and payload length of a header.
    pub fn parse_header(bytes: [u8; HEADER]) -> (u8, usize) {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        (bytes[0], usize::try_from(len).unwrap_or(usize::MAX))
    }

    /// One whole frame.
    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(&header(kind, payload.len()));
        out.extend_from_slice(payload);
        out
    }

    pub fn resize(width: u16, height: u16) -> Vec<u8> {
        let (w, h) = (width.to_be_bytes(), height.to_be_bytes());
        encode(RESIZE, &[w[0], w[1], h[0], h[1]])
    }

    /// Width and height of a `RESIZE` payload.
    pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
        match payload {
            [w0, w1, h0, h1] => Some((
                u16::from_be_bytes([*w0, *w1]),
                u16::from_be_bytes([*h0, *h1]),
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn frames_round_trip() {
        let bytes = frame::encode(frame::STDOUT, b"hello");
        let (kind, len) = frame::parse_header(bytes[..5].try_into().expect("header"));
        assert_eq!((kind, len), (frame::STDOUT, 5));
        assert_eq!(&bytes[5..], b"hello");
        let resize = frame::resize(80, 24);
        assert_eq!(frame::parse_resize(&resize[5..]), Some((80, 24)));
        assert_eq!(frame::parse_resize(b"abc"), None);
    }
}
