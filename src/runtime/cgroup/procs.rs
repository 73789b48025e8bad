//! The processes in a cgroup: listing, killing them all, and removing the
//! cgroup once it is empty.

use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::hierarchy::{Controller, Location};
use super::{Cgroup, CgroupError, CgroupPath, Cgroups};

/// How often emptiness is re-checked while waiting for killed processes.
const POLL: Duration = Duration::from_millis(2);
/// How long `delete` retries a leaf the kernel still calls busy (the last
/// exiting task is unlinked from the cgroup slightly after it is gone).
const RMDIR_RETRY: Duration = Duration::from_millis(500);

impl Cgroups {
    /// The hierarchy used to list and kill processes: the unified one when
    /// the host has it (every process yonggi adds is in it, and it has
    /// `cgroup.kill`), else the freezer's (to kill without races), else the
    /// first v1 mount.
    fn process_dir(&self, cg: &Cgroup) -> Option<PathBuf> {
        let layout = &self.inner.layout;
        let base = match (&layout.unified, layout.location(Controller::Freezer)) {
            (Some(u), _) => u.clone(),
            (None, Some(Location::V1(f))) => f,
            _ => layout.mounts().into_iter().next()?,
        };
        Some(base.join(cg.path.relative()))
    }

    /// The PIDs of every process in `cg` and the cgroups below it. A cgroup
    /// that does not exist has none.
    pub fn pids(&self, cg: &Cgroup) -> Result<Vec<i32>, CgroupError> {
        let mut out = Vec::new();
        if let Some(dir) = self.process_dir(cg) {
            self.collect_pids(&dir, &mut out)?;
        }
        Ok(out)
    }

    fn collect_pids(&self, dir: &Path, out: &mut Vec<i32>) -> Result<(), CgroupError> {
        let file = dir.join("cgroup.procs");
        let text = match self.inner.fs.read(&file) {
            Ok(t) => t,
            // Gone while we walked: a child cgroup removed concurrently.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(CgroupError::Read { path: file, source }),
        };
        for line in text.lines() {
            // Never 0 or negative: kill(2) would read those as process
            // groups or "everything".
            match line.trim().parse::<i32>() {
                Ok(pid) if pid > 0 => out.push(pid),
                _ => {
                    return Err(CgroupError::Parse {
                        path: file.clone(),
                        content: line.to_string(),
                    });
                }
            }
        }
        let subdirs = match self.inner.fs.subdirs(dir) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(CgroupError::Read {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        for sub in subdirs {
            self.collect_pids(&sub, out)?;
        }
        Ok(())
    }

    /// SIGKILLs every process in `cg` and below, and waits until none is
    /// left (or `timeout`). v2 uses `cgroup.kill`, which the kernel applies
    /// atomically, also to processes forking meanwhile; v1 freezes the
    /// cgroup while signalling so none can fork away, repeating until empty.
    /// Blocks the calling thread.
    pub fn kill_all(&self, cg: &Cgroup, timeout: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        let Some(dir) = self.process_dir(cg) else {
            return Ok(());
        };
        if !dir.is_dir() {
            return Ok(());
        }
        let has_kill_file =
            self.inner.layout.unified.is_some() && self.inner.fs.exists(&dir.join("cgroup.kill"));
        let freezer = match self.inner.layout.location(Controller::Freezer) {
            Some(Location::V1(mount)) if !has_kill_file => Some(mount.join(cg.path.relative())),
            _ => None,
        };
        loop {
            let pids = self.pids(cg)?;
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(CgroupError::KillTimeout {
                    path: cg.path.clone(),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            if has_kill_file {
                self.write(&dir.join("cgroup.kill"), "1")?;
            } else if let Some(freezer) = &freezer {
                self.freeze_and_kill(cg, freezer, timeout.saturating_sub(start.elapsed()))?;
            } else {
                signal_all(&pids)?;
            }
            sleep(POLL);
        }
    }

    /// Freezes, signals everything, thaws: the kills are delivered at thaw,
    /// and nothing could fork between the listing and the signals.
    fn freeze_and_kill(
        &self,
        cg: &Cgroup,
        freezer: &Path,
        timeout: Duration,
    ) -> Result<(), CgroupError> {
        let state = freezer.join("freezer.state");
        self.write(&state, "FROZEN")?;
        let start = Instant::now();
        let result = loop {
            match self.read_string(&state) {
                Ok(s) if s.trim() == "FROZEN" => break signal_all(&self.pids(cg)?),
                Ok(_) if start.elapsed() < timeout => sleep(POLL),
                // Not frozen in time (a task in uninterruptible sleep):
                // signal anyway, the caller's loop retries.
                Ok(_) => break signal_all(&self.pids(cg)?),
                Err(e) => break Err(e),
            }
        };
        self.write(&state, "THAWED")?;
        result
    }

    /// Removes `cg`: its directory in every hierarchy (retrying briefly
    /// while the kernel still counts just-exited tasks), then the parents
    /// this `Cgroup` records as created by yonggi, deepest first, stopping
    /// quietly at one still in use by others. Idempotent. The cgroup must
    /// have no processes left (see [`Cgroups::kill_all`]).
    pub fn delete(&self, cg: &Cgroup) -> Result<(), CgroupError> {
        for mount in self.inner.layout.mounts() {
            let dir = mount.join(cg.path.relative());
            self.rmdir_retrying(&dir)?;
        }
        let leaf_suffix = Path::new(cg.path.relative());
        let mounts = self.inner.layout.mounts();
        for dir in cg.created.iter().rev() {
            if dir.ends_with(leaf_suffix) {
                continue;
            }
            // A record read back from the store names only directories
            // inside our hierarchies; anything else is not ours to remove.
            if !mounts.iter().any(|m| dir.starts_with(m) && dir != m) {
                tracing::warn!(dir = %dir.display(), "not removing a directory outside the cgroup hierarchies");
                continue;
            }
            match self.inner.fs.rmdir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Another cgroup (a sibling pod's) still lives below it.
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        || e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: dir.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes the directories of `path` in every hierarchy if nothing
    /// lives in them any more (a shared parent such as the default one of
    /// pods without a cgroup parent); one still in use stays, quietly. A
    /// concurrent create below it walks down again (see `create`).
    pub fn remove_if_unused(&self, path: &CgroupPath) -> Result<(), CgroupError> {
        for mount in self.inner.layout.mounts() {
            let dir = mount.join(path.relative());
            if dir == mount {
                continue;
            }
            match self.inner.fs.rmdir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        || e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                Err(source) => return Err(CgroupError::Remove { path: dir, source }),
            }
        }
        Ok(())
    }

    fn rmdir_retrying(&self, dir: &Path) -> Result<(), CgroupError> {
        let start = Instant::now();
        loop {
            match self.inner.fs.rmdir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < RMDIR_RETRY =>
                {
                    sleep(POLL);
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: dir.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }
}

fn signal_all(pids: &[i32]) -> Result<(), CgroupError> {
    for &pid in pids {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            // Exited since it was listed.
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(source) => return Err(CgroupError::Signal { pid, source }),
        }
    }
    Ok(())
}
