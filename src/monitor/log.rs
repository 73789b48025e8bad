//! The CRI container log format kubelet reads:
//! `<RFC3339Nano time> <stdout|stderr> <F|P> <content>\n`.
//!
//! A line is written with `F` when its newline arrived. A line longer than
//! [`MAX_LINE`] is cut into `P` chunks, its end written with `F` (kubelet
//! joins them). Output that ends without a newline (at exit) is flushed as
//! `P`, as containerd does, so kubelet does not invent a newline. The time
//! is when the monitor writes the line, in UTC with nine fraction digits
//! (kubelet parses any RFC 3339 fraction).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Longest content of one log line before it is split (containerd's
/// default `max_container_log_line_size`).
pub(crate) const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

pub(crate) struct CriLog {
    path: PathBuf,
    file: File,
    /// The unfinished line of each stream.
    pending: [Vec<u8>; 2],
    out: Vec<u8>,
    max_line: usize,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl CriLog {
    pub(crate) fn open(path: &Path, max_line: usize) -> io::Result<CriLog> {
        Ok(CriLog {
            path: path.to_path_buf(),
            file: open(path)?,
            pending: [Vec::new(), Vec::new()],
            out: Vec::new(),
            max_line,
        })
    }

    /// Opens the path again (kubelet renamed the file to rotate it).
    pub(crate) fn reopen(&mut self) -> io::Result<()> {
        self.file = open(&self.path)?;
        Ok(())
    }

    /// Takes `data` read from `stream`, writing every finished line.
    pub(crate) fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let idx = stream as usize;
        while !data.is_empty() {
            let room = self.max_line - self.pending[idx].len();
            let window = &data[..data.len().min(room + 1)];
            match window.iter().position(|&b| b == b'\n') {
                Some(nl) if nl <= room => {
                    let mut line = std::mem::take(&mut self.pending[idx]);
                    line.extend_from_slice(&data[..nl]);
                    self.emit(stream, b'F', &line)?;
                    line.clear();
                    self.pending[idx] = line;
                    data = &data[nl + 1..];
                }
                _ => {
                    let take = data.len().min(room);
                    self.pending[idx].extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending[idx].len() == self.max_line && !data.is_empty() {
                        // Full and more is coming: a chunk of a long line.
                        let chunk = std::mem::take(&mut self.pending[idx]);
                        self.emit(stream, b'P', &chunk)?;
                        self.pending[idx] = chunk;
                        self.pending[idx].clear();
                    }
                }
            }
        }
        self.file.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Writes what is left of `stream`'s last line (no newline came).
    pub(crate) fn finish(&mut self, stream: Stream) -> io::Result<()> {
        let idx = stream as usize;
        if self.pending[idx].is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.pending[idx]);
        self.emit(stream, b'P', &line)?;
        self.file.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    fn emit(&mut self, stream: Stream, tag: u8, content: &[u8]) -> io::Result<()> {
        let (secs, nanos) = now();
        write_rfc3339_nano(&mut self.out, secs, nanos);
        self.out.push(b' ');
        self.out.extend_from_slice(stream.name());
        self.out.push(b' ');
        self.out.push(tag);
        self.out.push(b' ');
        self.out.extend_from_slice(content);
        self.out.push(b'\n');
        Ok(())
    }
}

fn now() -> (i64, u32) {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(_) => (0, 0),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` of a Unix time.
pub(crate) fn write_rfc3339_nano(out: &mut Vec<u8>, secs: i64, nanos: u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let text = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    out.extend_from_slice(text.as_bytes());
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_nanoseconds() {
        let mut out = Vec::new();
        write_rfc3339_nano(&mut out, 0, 0);
        assert_eq!(out, b"1970-01-01T00:00:00.000000000Z");
        out.clear();
        // 2024-02-29T23:59:59.5Z, a leap day.
        write_rfc3339_nano(&mut out, 1_709_251_199, 500_000_000);
        assert_eq!(out, b"2024-02-29T23:59:59.500000000Z");
    }

    fn lines(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .expect("log")
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let _time = p.next();
                (
                    p.next().unwrap_or("").to_string(),
                    p.next().unwrap_or("").to_string(),
                    p.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_are_split_at_newlines_across_reads_and_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut log = CriLog::open(&path, 4).expect("open");
        log.write(Stream::Stdout, b"ab").expect("write");
        log.write(Stream::Stderr, b"err\n").expect("write");
        log.write(Stream::Stdout, b"c\nabcdefghij\nabcd\nxy")
            .expect("write");
        log.finish(Stream::Stdout).expect("finish");
        let got = lines(&path);
        let want = [
            ("stderr", "F", "err"),
            ("stdout", "F", "abc"),
            ("stdout", "P", "abcd"),
            ("stdout", "P", "efgh"),
            ("stdout", "F", "ij"),
            ("stdout", "F", "abcd"),
            ("stdout", "P", "xy"),
        ];
        let got: Vec<_> = got
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        assert_eq!(got, want);
    }
}
