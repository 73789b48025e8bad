//! The per-container monitor: `yonggi monitor <state-dir>`, one process per
//! container, started by the daemon and outliving it.
//!
//! It detaches (fork, `setsid`) so it is reparented away from the daemon,
//! becomes a child subreaper, forks the container init (see
//! [`crate::runtime::spawn`]), holds its stdio, writes the CRI log, and on
//! exit records [`ExitStatus`] in `exit.json`. Attach sessions (see
//! `attach.rs`) get the live output and feed the stdin, never holding the
//! container or its log up. It is single-threaded and
//! has no async runtime; it waits on a signalfd and its sockets with
//! `poll`, never on a timer.
//!
//! State dir files (the caller makes the dir and writes the first two):
//!
//! | file | written by | what |
//! |---|---|---|
//! | `config.json` | caller | the OCI runtime spec of the container |
//! | `monitor.json` | caller | [`MonitorConfig`] |
//! | `monitor.pid`, `init.pid` | monitor | pids, in the daemon's PID namespace |
//! | `ctl.sock` | monitor | control socket (start, kill, wait, state, reopen log, attach) |
//! | `exit.json` | monitor | [`ExitStatus`], atomically, once |
//! | `monitor.log` | monitor | the monitor's own errors |
//!
//! Container states as the monitor sees them:
//!
//! ```text
//! launch ──► created ──start──► running ──exit/kill──► exited (exit.json)
//!               └──────────────kill─────────────────────┘
//! ```

mod attach;
mod client;
mod exit;
mod log;
mod protocol;
mod run;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use client::{
    Launched, MonitorError, attach, kill, launch, read_exit, reopen_log, start, state, wait,
    wait_timeout,
};
pub use exit::ExitStatus;
pub use protocol::{MonitorState, frame as attach_frame};
pub use run::main;

/// What the monitor needs besides the OCI spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// The CRI log file (its directory must exist).
    pub log_path: PathBuf,
    /// Keep a stdin pipe open for attach (else stdin is /dev/null).
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin after the first attach detaches.
    #[serde(default)]
    pub stdin_once: bool,
    /// Cgroup directories the init joins (by writing `cgroup.procs`), one
    /// per hierarchy on cgroup v1, one on v2.
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// A cgroup v2 directory the init is created in directly (`clone3` with
    /// `CLONE_INTO_CGROUP`; pure v2 hosts, where it is the only one and
    /// `cgroup_dirs` is empty).
    #[serde(default)]
    pub clone_into_cgroup: Option<PathBuf>,
    /// `memory.events` (v2) or `memory.oom_control` (v1) of the cgroup.
    #[serde(default)]
    pub oom_events: Option<PathBuf>,
}

/// The files of a state dir.
pub struct Paths;

impl Paths {
    pub fn spec(dir: &Path) -> PathBuf {
        dir.join("config.json")
    }
    pub fn config(dir: &Path) -> PathBuf {
        dir.join("monitor.json")
    }
    pub fn exit(dir: &Path) -> PathBuf {
        dir.join("exit.json")
    }
    pub fn monitor_pid(dir: &Path) -> PathBuf {
        dir.join("monitor.pid")
    }
    pub fn init_pid(dir: &Path) -> PathBuf {
        dir.join("init.pid")
    }
    pub fn control(dir: &Path) -> PathBuf {
        dir.join(CONTROL)
    }
}

pub(crate) const CONTROL: &str = "ctl.sock";
