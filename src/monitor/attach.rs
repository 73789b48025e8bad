//! Attach sessions: connections on `ctl.sock` that asked to attach
//! ([`Request::Attach`](super::protocol::Request)) and now carry
//! [`frame`]s. Every session gets the live output (stdout and stderr, or the
//! pty); sessions attached with stdin feed the container's stdin (the pipe's
//! write end, or the pty), and RESIZE frames size the pty.
//!
//! Nothing here may stall the poll loop, so the container's output and its
//! log: the sockets and the stdin are non-blocking; output a session has
//! not taken yet waits in its backlog, and a session whose backlog would
//! pass [`MAX_BACKLOG`] is cut off (the daemon sees the connection end
//! without `EXIT`). Stdin waiting for the container to read it is bounded
//! by [`STDIN_HIGH`]: past it the sessions are not read from, which pushes
//! back on the clients.
//!
//! `stdin_once`: when the first session attached with stdin ends its stdin
//! (a `STDIN_END` frame, or it goes away), the container's stdin is closed
//! (with a terminal, the terminal's end-of-file character is written, as
//! closing the pty would end the output too), and later sessions' stdin is
//! dropped.

use std::collections::VecDeque;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::log::Stream;
use super::protocol::frame;

/// Output a session may be behind before it is cut off.
pub(crate) const MAX_BACKLOG: usize = 256 * 1024;
/// Stdin buffered for the container before the sessions stop being read.
pub(crate) const STDIN_HIGH: usize = 64 * 1024;
/// How long the sessions get to take their last output after the exit.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);
/// Read from a session at a time.
const READ_CHUNK: usize = 16 * 1024;
/// A backlog's capacity kept once it has emptied.
const KEEP_CAPACITY: usize = 64 * 1024;
/// The terminal's end-of-file character (^D), the pty's "close stdin".
const VEOF: u8 = 0x04;

struct Session {
    stream: UnixStream,
    /// Output not yet taken by the session, as frames.
    backlog: VecDeque<u8>,
    /// Bytes received that do not make a whole frame yet.
    input: Vec<u8>,
    /// Attached with stdin, which has not ended.
    stdin: bool,
    dead: bool,
}

pub(crate) struct Attach {
    sessions: Vec<Session>,
    /// Where stdin frames go: the stdin pipe's write end or the pty master;
    /// `None` without stdin or once it is closed.
    stdin: Option<OwnedFd>,
    /// The pty master, for resizes (a terminal only).
    pty: Option<OwnedFd>,
    stdin_once: bool,
    /// Stdin received, not yet taken by the container.
    pending: Vec<u8>,
    /// Close stdin once `pending` is written.
    close_stdin: bool,
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

impl Attach {
    /// `stdin` is made non-blocking (with a pty that is the master's open
    /// file, which the output side reads non-blocking too).
    pub(crate) fn new(
        stdin: Option<OwnedFd>,
        pty: Option<OwnedFd>,
        stdin_once: bool,
    ) -> nix::Result<Attach> {
        if let Some(fd) = &stdin {
            set_nonblocking(fd)?;
        }
        Ok(Attach {
            sessions: Vec::new(),
            stdin,
            pty,
            stdin_once,
            pending: Vec::new(),
            close_stdin: false,
        })
    }

    /// Takes a connection that was answered `Ok` to its attach request;
    /// `early` is what it sent past its request line.
    pub(crate) fn add(&mut self, stream: UnixStream, stdin: bool, early: &[u8]) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        self.sessions.push(Session {
            stream,
            backlog: VecDeque::new(),
            input: early.to_vec(),
            stdin,
            dead: false,
        });
        let last = self.sessions.len() - 1;
        self.parse(last);
        self.sweep();
    }

    fn wants_stdin_write(&self) -> bool {
        self.stdin.is_some() && !self.pending.is_empty()
    }

    fn wants_input(&self) -> bool {
        self.pending.len() < STDIN_HIGH
    }

    /// Adds the descriptors to poll: the stdin when something waits to be
    /// written to it, then every session. [`Attach::ready`] takes the
    /// results in the same order, before anything else changes `self`.
    pub(crate) fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        if let (true, Some(fd)) = (self.wants_stdin_write(), &self.stdin) {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
        }
        let input = self.wants_input();
        for s in &self.sessions {
            let mut flags = PollFlags::empty();
            if input {
                flags |= PollFlags::POLLIN;
            }
            if !s.backlog.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(s.stream.as_fd(), flags));
        }
    }

    pub(crate) fn ready(&mut self, revents: &[PollFlags]) {
        let mut revents = revents.iter();
        if self.wants_stdin_write() && revents.next().is_some_and(|r| !r.is_empty()) {
            self.write_stdin();
        }
        let input = self.wants_input();
        for i in 0..self.sessions.len() {
            let Some(r) = revents.next().copied() else {
                break;
            };
            if r.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
                self.sessions[i].dead = true;
                continue;
            }
            if r.contains(PollFlags::POLLOUT) && !flush(&mut self.sessions[i]) {
                self.sessions[i].dead = true;
                continue;
            }
            if r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
                if input {
                    self.read(i);
                } else {
                    // Gone, and its stdin cannot be taken now anyway.
                    self.sessions[i].dead = true;
                }
            }
        }
        self.sweep();
    }

    fn read(&mut self, i: usize) {
        let mut chunk = [0u8; READ_CHUNK];
        let s = &mut self.sessions[i];
        match s.stream.read(&mut chunk) {
            Ok(0) => s.dead = true,
            Ok(n) => {
                s.input.extend_from_slice(&chunk[..n]);
                self.parse(i);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => s.dead = true,
        }
    }

    /// Acts on the whole frames session `i` has sent.
    fn parse(&mut self, i: usize) {
        let mut used = 0;
        loop {
            let input = &self.sessions[i].input[used..];
            let Some(head) = input.first_chunk::<{ frame::HEADER }>() else {
                break;
            };
            let (kind, len) = frame::parse_header(*head);
            if len > frame::MAX_PAYLOAD {
                self.sessions[i].dead = true;
                return;
            }
            let Some(payload) = input.get(frame::HEADER..frame::HEADER + len) else {
                break;
            };
            match kind {
                frame::STDIN => {
                    if self.sessions[i].stdin && self.stdin.is_some() && !self.close_stdin {
                        self.pending.extend_from_slice(payload);
                    }
                }
                frame::STDIN_END => {
                    if std::mem::take(&mut self.sessions[i].stdin) {
                        self.stdin_ended();
                    }
                }
                frame::RESIZE => {
                    if let (Some(pty), Some((width, height))) =
                        (&self.pty, frame::parse_resize(payload))
                    {
                        let size = rustix::termios::Winsize {
                            ws_row: height,
                            ws_col: width,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(pty, size);
                    }
                }
                _ => {
                    self.sessions[i].dead = true;
                    return;
                }
            }
            used += frame::HEADER + len;
        }
        self.sessions[i].input.drain(..used);
        self.write_stdin();
    }

    /// A session attached with stdin ended it, or went away.
    fn stdin_ended(&mut self) {
        if !self.stdin_once || self.close_stdin || self.stdin.is_none() {
            return;
        }
        if self.pty.is_some() {
            self.pending.push(VEOF);
        }
        self.close_stdin = true;
        self.write_stdin();
    }

    /// Writes what the container's stdin takes without blocking.
    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(fd, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                // EPIPE, EIO: nobody reads the container's stdin any more.
                Err(_) => {
                    self.pending.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.pending.is_empty() {
            if self.close_stdin {
                self.stdin = None;
            }
            if self.pending.capacity() > KEEP_CAPACITY {
                self.pending.shrink_to_fit();
            }
        }
    }

    /// Queues output read from the container for every session.
    pub(crate) fn output(&mut self, stream: Stream, data: &[u8]) {
        let kind = match stream {
            Stream::Stdout => frame::STDOUT,
            Stream::Stderr => frame::STDERR,
        };
        for chunk in data.chunks(frame::MAX_PAYLOAD) {
            self.send(kind, chunk);
        }
    }

    fn send(&mut self, kind: u8, data: &[u8]) {
        if self.sessions.is_empty() {
            return;
        }
        for s in self.sessions.iter_mut().filter(|s| !s.dead) {
            if s.backlog.len() + frame::HEADER + data.len() > MAX_BACKLOG {
                // Too slow: cut off rather than hold the container up.
                s.dead = true;
                continue;
            }
            s.backlog.extend(frame::header(kind, data.len()));
            s.backlog.extend(data);
            if !flush(s) {
                s.dead = true;
            }
        }
        self.sweep();
    }

    /// Drops the dead sessions; one that still had stdin detached it.
    fn sweep(&mut self) {
        let mut ended = 0;
        self.sessions.retain(|s| {
            if s.dead && s.stdin {
                ended += 1;
            }
            !s.dead
        });
        if ended > 0 {
            self.stdin_ended();
        }
    }

    /// After the exit and the last output: tells every session, gives them
    /// [`FLUSH_AT_EXIT`] to take what is left, and hangs up.
    pub(crate) fn finish(&mut self) {
        self.send(frame::EXIT, &[]);
        let deadline = Instant::now() + FLUSH_AT_EXIT;
        loop {
            self.sessions.retain(|s| !s.backlog.is_empty() && !s.dead);
            let left = deadline.saturating_duration_since(Instant::now());
            if self.sessions.is_empty() || left.is_zero() {
                break;
            }
            let mut fds: Vec<PollFd> = self
                .sessions
                .iter()
                .map(|s| PollFd::new(s.stream.as_fd(), PollFlags::POLLOUT))
                .collect();
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            for (s, ready) in self.sessions.iter_mut().zip(ready) {
                if ready && !flush(s) {
                    s.dead = true;
                }
            }
        }
        self.sessions.clear();
    }
}

/// Writes what the socket takes of the backlog; false when the session is gone.
fn flush(s: &mut Session) -> bool {
    while !s.backlog.is_empty() {
        let (a, b) = s.backlog.as_slices();
        match s.stream.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(0) => return false,
            Ok(n) => {
                s.backlog.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if s.backlog.is_empty() && s.backlog.capacity() > KEEP_CAPACITY {
        s.backlog.shrink_to_fit();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use nix::unistd::pipe2;

    fn frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(head) = rest.first_chunk::<{ frame::HEADER }>() {
            let (kind, len) = frame::parse_header(*head);
            out.push((kind, rest[frame::HEADER..frame::HEADER + len].to_vec()));
            rest = &rest[frame::HEADER + len..];
        }
        out
    }

    fn read_available(stream: &mut UnixStream) -> Vec<u8> {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    }

    fn pump(attach: &mut Attach) {
        let mut fds = Vec::new();
        attach.poll_fds(&mut fds);
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        attach.ready(&revents);
    }

    #[test]
    fn every_session_gets_the_output_and_stdin_once_closes_on_first_detach() {
        let (stdin_r, stdin_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let mut attach = Attach::new(Some(stdin_w), None, true).expect("attach");
        let (mut one, theirs) = UnixStream::pair().expect("pair");
        attach.add(theirs, true, &frame::encode(frame::STDIN, b"early "));
        let (mut two, theirs) = UnixStream::pair().expect("pair");
        attach.add(theirs, false, &[]);
        attach.output(Stream::Stdout, b"out");
        attach.output(Stream::Stderr, b"err");
        for s in [&mut one, &mut two] {
            assert_eq!(
                frames(&read_available(s)),
                vec![
                    (frame::STDOUT, b"out".to_vec()),
                    (frame::STDERR, b"err".to_vec())
                ]
            );
        }
        // The session without stdin cannot write to the container's.
        two.write_all(&frame::encode(frame::STDIN, b"ignored"))
            .expect("send");
        one.write_all(&frame::encode(frame::STDIN, b"late\n"))
            .expect("send");
        one.write_all(&frame::encode(frame::STDIN_END, &[]))
            .expect("send");
        for _ in 0..3 {
            pump(&mut attach);
        }
        assert!(attach.stdin.is_none(), "stdin_once closed the stdin");
        let mut got = String::new();
        std::fs::File::from(stdin_r)
            .read_to_string(&mut got)
            .expect("read stdin");
        assert_eq!(got, "early late\n");
        attach.finish();
        assert_eq!(
            frames(&read_available(&mut two)),
            vec![(frame::EXIT, vec![])]
        );
    }

    #[test]
    fn a_session_that_does_not_read_is_cut_off() {
        let mut attach = Attach::new(None, None, false).expect("attach");
        let (slow, theirs) = UnixStream::pair().expect("pair");
        attach.add(theirs, false, &[]);
        let (mut fast, theirs) = UnixStream::pair().expect("pair");
        attach.add(theirs, false, &[]);
        let chunk = vec![b'x'; 8192];
        let mut seen = 0;
        for _ in 0..((MAX_BACKLOG * 4) / chunk.len()) {
            attach.output(Stream::Stdout, &chunk);
            seen += read_available(&mut fast).len();
        }
        assert_eq!(attach.sessions.len(), 1, "the slow session is gone");
        assert_eq!(seen, (MAX_BACKLOG * 4) / chunk.len() * (chunk.len() + 5));
        drop(slow);
    }
}
