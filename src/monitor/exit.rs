//! How the container ended, in `exit.json` of its state dir, written once
//! by the monitor (temp file + rename, so a reader sees all or nothing) and
//! read by the daemon, also after its own restart.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + the signal number that killed it.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// When the monitor reaped it, nanoseconds since the Unix epoch.
    pub finished_at_ns: i64,
    /// Whether the OOM-kill counter of its cgroup rose while it ran.
    pub oom_killed: bool,
}

pub(crate) fn write(path: &Path, status: &ExitStatus) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(status).map_err(io::Error::other)?;
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    // No fsync: it guards only against power loss, after which no container
    // survives and the daemon treats every one as exited anyway; it cost
    // StopContainer milliseconds on a busy disk. The rename still makes
    // the file appear whole or not at all.
    fs::rename(&tmp, path)
}

pub(crate) fn read(path: &Path) -> io::Result<Option<ExitStatus>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `oom_kill` counter of a cgroup: `memory.events` on v2,
/// `memory.oom_control` on v1 (both are `key value` lines).
pub(crate) struct OomCounter {
    path: Option<PathBuf>,
    baseline: u64,
}

impl OomCounter {
    pub(crate) fn new(path: Option<PathBuf>) -> OomCounter {
        let baseline = path.as_deref().map_or(0, read_counter);
        OomCounter { path, baseline }
    }

    pub(crate) fn rose(&self) -> bool {
        self.path
            .as_deref()
            .is_some_and(|p| read_counter(p) > self.baseline)
    }
}

/// Missing or unreadable counts as zero: the cgroup may be gone already,
/// and an exit must be recorded whatever happened to it.
fn read_counter(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oom_counter_is_read_from_v1_and_v2_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("memory.events");
        fs::write(&path, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").expect("write");
        let counter = OomCounter::new(Some(path.clone()));
        assert!(!counter.rose());
        fs::write(&path, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").expect("write");
        assert!(counter.rose());
        assert!(!OomCounter::new(None).rose());
    }

    #[test]
    fn the_exit_file_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exit.json");
        assert_eq!(read(&path).expect("read"), None);
        let status = ExitStatus {
            exit_code: 137,
            signal: Some(9),
            finished_at_ns: 1,
            oom_killed: true,
        };
        write(&path, &status).expect("write");
        assert_eq!(read(&path).expect("read"), Some(status));
    }
}
