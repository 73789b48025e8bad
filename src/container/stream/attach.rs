//! An attach session: the streaming client's streams on one connection to
//! the container's monitor ([`crate::monitor::attach`]), as frames. The
//! monitor sends the live output and ends with `EXIT` when the container
//! has exited; it hangs up early on a session that falls too far behind.
//!
//! The client's stdin ending is a detach, except with `stdin_once`: then the
//! container's stdin is closed and the output streams on until the
//! container exits (what kubelet's attach does for `kubectl run -i`).

use std::convert::Infallible;
use std::io;
use std::os::unix::net::UnixStream;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::monitor::attach_frame as frame;
use crate::stream::{ExecIo, Reader, TerminalSize, Writer};

#[derive(Debug, thiserror::Error)]
pub(crate) enum AttachError {
    #[error("the monitor cut the session off: the client did not keep up with the output")]
    CutOff,
    #[error("the monitor sent a malformed frame (kind {kind}, {len} bytes)")]
    BadFrame { kind: u8, len: usize },
    #[error("talking to the monitor")]
    Io(#[source] io::Error),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    /// The client asked for a terminal: stderr, if any, joins stdout.
    pub(super) tty: bool,
    pub(super) stdin_once: bool,
}

/// Runs until the container exits, the client detaches or the monitor
/// hangs up.
pub(super) async fn session(
    conn: UnixStream,
    io: ExecIo,
    opts: Options,
) -> Result<(), AttachError> {
    conn.set_nonblocking(true).map_err(AttachError::Io)?;
    let conn = tokio::net::UnixStream::from_std(conn).map_err(AttachError::Io)?;
    let (from_monitor, to_monitor) = conn.into_split();
    let ExecIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    tokio::select! {
        outcome = output(from_monitor, stdout, stderr, opts.tty) => outcome,
        () = input(to_monitor, stdin, resize, opts.stdin_once) => Ok(()),
    }
}

async fn output(
    mut from: OwnedReadHalf,
    mut stdout: Option<Writer>,
    mut stderr: Option<Writer>,
    tty: bool,
) -> Result<(), AttachError> {
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; frame::HEADER];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(AttachError::CutOff),
            Err(e) => return Err(AttachError::Io(e)),
        }
        let (kind, len) = frame::parse_header(head);
        if len > frame::MAX_PAYLOAD {
            return Err(AttachError::BadFrame { kind, len });
        }
        payload.resize(len, 0);
        match from.read_exact(&mut payload).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(AttachError::CutOff),
            Err(e) => return Err(AttachError::Io(e)),
        }
        let to = match kind {
            frame::STDOUT => stdout.as_mut(),
            frame::STDERR if stderr.is_some() => stderr.as_mut(),
            // A terminal has one output stream.
            frame::STDERR if tty => stdout.as_mut(),
            frame::STDERR => None,
            frame::EXIT => return Ok(()),
            _ => return Err(AttachError::BadFrame { kind, len }),
        };
        // The writers push back on a slow client; the monitor's bound then
        // decides how far behind it may fall.
        if let Some(to) = to
            && to.write_all(&payload).await.is_err()
        {
            // The client is gone: the session is over.
            return Ok(());
        }
    }
}

async fn read_some(from: &mut Option<Reader>, buf: &mut [u8]) -> io::Result<usize> {
    match from {
        Some(from) => from.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn next_size(sizes: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match sizes {
        Some(sizes) => sizes.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends the client's stdin and terminal sizes. Resolves only when the
/// client detaches (its stdin ended, without `stdin_once`).
async fn input(
    mut to: OwnedWriteHalf,
    mut stdin: Option<Reader>,
    mut sizes: Option<mpsc::Receiver<TerminalSize>>,
    stdin_once: bool,
) {
    // Below the monitor's largest frame.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let message = tokio::select! {
            read = read_some(&mut stdin, &mut buf), if stdin.is_some() => match read {
                Ok(n) if n > 0 => frame::encode(frame::STDIN, &buf[..n]),
                _ => {
                    stdin = None;
                    if !stdin_once {
                        return;
                    }
                    frame::encode(frame::STDIN_END, &[])
                }
            },
            size = next_size(&mut sizes), if sizes.is_some() => match size {
                Some(size) => frame::resize(size.width, size.height),
                None => {
                    sizes = None;
                    continue;
                }
            },
            else => {
                let never: Infallible = std::future::pending().await;
                match never {}
            }
        };
        if to.write_all(&message).await.is_err() {
            // The monitor is gone; the output side tells how it ended.
            let never: Infallible = std::future::pending().await;
            match never {}
        }
    }
}
