//! The control socket of a monitor (`ctl.sock` in the state dir): one JSON
//! request line, one JSON response line, per connection. `Wait` answers
//! when the container exits, so a stop never polls.

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
