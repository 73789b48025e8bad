//! CreateContainer, StartContainer, StopContainer, RemoveContainer. A
//! create either finishes with a stored record or leaves nothing (snapshot,
//! cgroup, monitor, state dir and name are rolled back); stop and remove
//! are idempotent.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::spec::{self, ContainerSpec, ImageInfo, Propagation};
use super::{Container, ContainerError, Service, now_ns, reservation_key};
use crate::monitor::{self, MonitorConfig};
use crate::runtime::cgroup::Cgroup;
use crate::state::Bucket;

const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

fn invalid(field: &'static str, message: impl Into<String>) -> ContainerError {
    ContainerError::Invalid {
        field,
        message: message.into(),
    }
}

/// `log_directory` + `log_path`, refused unless it names a file below an
/// absolute log directory (an empty pair must never resolve to `/`).
fn log_file(directory: &str, path: &str) -> Result<Option<PathBuf>, ContainerError> {
    if directory.is_empty() && path.is_empty() {
        return Ok(None);
    }
    if directory.is_empty() || !Path::new(directory).is_absolute() {
        return Err(invalid(
            "log_path",
            format!("the pod's log directory {directory:?} is not an absolute path"),
        ));
    }
    let rel = Path::new(path);
    let ok = !path.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && rel.file_name().is_some();
    if !ok {
        return Err(invalid(
            "log_path",
            format!("{path:?} must be a relative file path without `..`"),
        ));
    }
    Ok(Some(Path::new(directory).join(rel)))
}

/// In a pod with a user namespace the rootfs is shifted to the pod's ids.
fn snapshot_idmap(pod: &crate::pod::Sandbox) -> Option<crate::snapshot::Idmap> {
    let (userns, m) = (pod.userns_path()?, pod.spec.userns.as_ref()?);
    let range = |m: crate::security::userns::IdMapping| crate::snapshot::IdRange {
        container_id: m.container_id,
        host_id: m.host_id,
        size: m.length,
    };
    Some(crate::snapshot::Idmap {
        userns,
        uid: range(m.uid),
        gid: range(m.gid),
    })
}

impl Service {
    pub async fn create(
        &self,
        pod_id: &str,
        spec: ContainerSpec,
        image: ImageInfo,
    ) -> Result<String, ContainerError> {
        let pod = self.pods.get(pod_id)?;
        if !pod.is_ready() {
            return Err(ContainerError::PodNotReady(pod.id));
        }
        for d in &spec.devices {
            super::devices::resolve(d)?;
        }
        if let Some(userns) = &spec.userns
            && !userns.matches(pod.spec.userns.as_ref())
        {
            return Err(invalid(
                "userns_options",
                "the container's user namespace must be its pod's (same mode and mappings)",
            ));
        }
        for m in &spec.mounts {
            if !Path::new(&m.container_path).is_absolute() {
                return Err(invalid(
                    "mounts",
                    format!("container path {:?} is not absolute", m.container_path),
                ));
            }
            if m.recursive_read_only && (!m.readonly || m.propagation != Propagation::Private) {
                return Err(invalid(
                    "mounts",
                    format!(
                        "recursive read-only mount of {:?} must be read-only with private propagation",
                        m.container_path
                    ),
                ));
            }
            if !m.host_path.exists() {
                std::fs::create_dir_all(&m.host_path).map_err(|source| ContainerError::Io {
                    action: "create the volume directory",
                    path: m.host_path.clone(),
                    source,
                })?;
            }
            // A symlinked host path binds its target (the spec names the
            // target; status shows the path as asked, as kubelet sent it).
            let resolved =
                std::fs::canonicalize(&m.host_path).map_err(|source| ContainerError::Io {
                    action: "resolve the volume path",
                    path: m.host_path.clone(),
                    source,
                })?;
            super::volumes::check_host_propagation(m, &resolved)?;
        }
        let log_path = log_file(&pod.spec.log_directory, &spec.log_path)?;
        spec::argv(&spec, &image)?;
        super::confine::check(&spec.security, &pod)?;

        let id = hex::encode(rand::random::<[u8; 32]>());
        let key = reservation_key(&pod.id, &spec.metadata);
        {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(holder) = names.get(&key) {
                return Err(ContainerError::NameReserved {
                    name: format!("{}_{}", spec.metadata.name, spec.metadata.attempt),
                    id: holder.clone(),
                });
            }
            names.insert(key.clone(), id.clone());
        }
        let dir = self.containers_dir().join(&id);
        let mut record = Container {
            id: id.clone(),
            pod_id: pod.id.clone(),
            spec,
            image,
            created_at: now_ns(),
            started_at: 0,
            log_path: log_path.clone().unwrap_or_default(),
            dir: dir.clone(),
            cgroup: None,
            init_pid: 0,
            monitor_pid: 0,
            exit: None,
            started: false,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        };
        let result = self.build(&mut record, &pod, log_path).await;
        if let Err(e) = result {
            if let Err(undo) = self.destroy(&record).await {
                tracing::warn!(id = %id, error = %crate::cri::chain(&undo), "rollback of a failed create");
            }
            self.release_name(&key);
            return Err(e);
        }
        self.store.put(Bucket::Containers, &id, &record)?;
        tracing::info!(id = %id, pod = %pod.id, name = %record.spec.metadata.name, "container created");
        Ok(id)
    }

    async fn build(
        &self,
        c: &mut Container,
        pod: &crate::pod::Sandbox,
        log_path: Option<PathBuf>,
    ) -> Result<(), ContainerError> {
        std::fs::create_dir_all(&c.dir).map_err(|source| ContainerError::Io {
            action: "create the container state dir",
            path: c.dir.clone(),
            source,
        })?;
        let log_path = log_path.unwrap_or_else(|| c.dir.join("container.log"));
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ContainerError::Io {
                action: "create the log directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let snapshots = self.snapshots.clone();
        let (id, layers) = (c.id.clone(), c.image.layer_dirs.clone());
        let idmap = snapshot_idmap(pod);
        let snap = tokio::task::spawn_blocking(move || match idmap {
            None => snapshots.prepare(&id, &layers, false),
            Some(idmap) => snapshots.prepare_idmapped(&id, &layers, &idmap),
        })
        .await
        .map_err(ContainerError::Task)?
        .map_err(ContainerError::Snapshot)?;
        let oci = spec::build(&c.spec, &c.image, pod, &snap.rootfs)?;
        if let Some(user) = oci.process().as_ref().map(|p| p.user()) {
            c.uid = user.uid();
            c.gid = user.gid();
            c.groups = user.additional_gids().clone().unwrap_or_default();
        }

        let parent = if pod.spec.cgroup_parent.is_empty() {
            self.default_parent.clone()
        } else {
            self.driver
                .pod_cgroup(&pod.spec.cgroup_parent)
                .map_err(ContainerError::Cgroup)?
        };
        let path = self
            .driver
            .container_cgroup(&parent, &c.id)
            .map_err(ContainerError::Cgroup)?;
        let mut resources = c.spec.resources.cgroup();
        // A privileged container keeps the host's devices (its parent's
        // rules); any other gets the defaults and what it asked for.
        if !c.spec.security.privileged {
            resources.devices = Some(super::devices::cgroup_rules(&c.spec.devices)?);
        }
        let cg = self
            .cgroups
            .create_with(&path, &resources)
            .map_err(ContainerError::Cgroup)?;
        c.cgroup = Some(cg.clone());

        let clone_into = self.cgroups.supports_clone_into();
        let dirs = self.cgroups.dirs(&cg);
        let config = MonitorConfig {
            log_path,
            stdin: c.spec.stdin,
            stdin_once: c.spec.stdin_once,
            cgroup_dirs: if clone_into { Vec::new() } else { dirs.clone() },
            clone_into_cgroup: if clone_into {
                dirs.first().cloned()
            } else {
                None
            },
            oom_events: self.cgroups.oom_events_file(&cg).ok(),
        };
        let exe = self.exe()?;
        let dir = c.dir.clone();
        let launched = tokio::task::spawn_blocking(move || {
            monitor::launch(&exe, &dir, &oci, &config, LAUNCH_TIMEOUT)
        })
        .await
        .map_err(ContainerError::Task)?
        .map_err(ContainerError::Monitor)?;
        c.init_pid = launched.init_pid;
        c.monitor_pid = launched.monitor_pid;
        set_oom_score_adj(launched.init_pid, c.spec.resources.oom_score_adj);
        Ok(())
    }

    pub(super) fn exe(&self) -> Result<PathBuf, ContainerError> {
        std::env::current_exe().map_err(|source| ContainerError::Io {
            action: "find the yonggi binary",
            path: PathBuf::from("/proc/self/exe"),
            source,
        })
    }

    fn release_name(&self, key: &str) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        let lock = self.lock_for(&c.id);
        let _guard = lock.lock().await;
        let mut c = self.get(&c.id)?;
        if c.state() != super::State::Created {
            return Err(ContainerError::WrongState {
                id: c.id.clone(),
                state: state_name(c.state()),
                wanted: "created",
            });
        }
        let dir = c.dir.clone();
        // Taken before the start: an init that exits at once is reaped (its
        // finished_at) before the monitor's answer reaches us.
        let started_at = now_ns();
        let started = tokio::task::spawn_blocking(move || monitor::start(&dir))
            .await
            .map_err(ContainerError::Task)?;
        c.started = true;
        c.started_at = started_at;
        if let Err(e) = started {
            // The init could not exec: kubelet sees it as exited with an error.
            c.exit = Some(monitor::read_exit(&c.dir).ok().flatten().unwrap_or(
                crate::monitor::ExitStatus {
                    exit_code: 128,
                    signal: None,
                    finished_at_ns: now_ns(),
                    oom_killed: false,
                },
            ));
            self.store.put(Bucket::Containers, &c.id, &c)?;
            return Err(ContainerError::Monitor(e));
        }
        self.store.put(Bucket::Containers, &c.id, &c)?;
        Ok(())
    }

    /// Stops the container: its stop signal, then SIGKILL after `timeout`.
    /// A container that is gone or exited is stopped already.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let c = match self.get(id) {
            Ok(c) => c,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let lock = self.lock_for(&c.id);
        let _guard = lock.lock().await;
        let mut c = self.get(&c.id)?;
        if c.exit.is_none() {
            let signal = stop_signal(&c.image.stop_signal);
            let dir = c.dir.clone();
            let exit = tokio::task::spawn_blocking(move || {
                if !timeout.is_zero() {
                    monitor::kill(&dir, signal as i32)?;
                    if let Some(exit) = monitor::wait_timeout(&dir, timeout)? {
                        return Ok(exit);
                    }
                }
                monitor::kill(&dir, Signal::SIGKILL as i32)?;
                monitor::wait(&dir)
            })
            .await
            .map_err(ContainerError::Task)?;
            match exit {
                Ok(exit) => c.exit = Some(exit),
                Err(e) => {
                    c = self.observe(c);
                    if c.exit.is_none() {
                        return Err(ContainerError::Monitor(e));
                    }
                }
            }
            c.started = true;
            self.store.put(Bucket::Containers, &c.id, &c)?;
        }
        if let Some(cg) = &c.cgroup {
            // Whatever the init left behind in its cgroup goes with it.
            let (cgroups, cg) = (self.cgroups.clone(), cg.clone());
            tokio::task::spawn_blocking(move || cgroups.kill_all(&cg, KILL_TIMEOUT))
                .await
                .map_err(ContainerError::Task)?
                .map_err(ContainerError::Cgroup)?;
        }
        Ok(())
    }

    /// Removes the container in any state; a missing one is removed already.
    pub async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let c = match self.get(id) {
            Ok(c) => c,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(&c.id, Duration::ZERO).await?;
        let lock = self.lock_for(&c.id);
        let _guard = lock.lock().await;
        let c = self.get(&c.id)?;
        self.destroy(&c).await?;
        self.store.delete(Bucket::Containers, &c.id)?;
        self.release_name(&reservation_key(&c.pod_id, &c.spec.metadata));
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&c.id);
        tracing::info!(id = %c.id, "container removed");
        Ok(())
    }

    /// Kills what runs and deletes the cgroup, snapshot and state dir.
    /// Idempotent: what is gone is skipped.
    async fn destroy(&self, c: &Container) -> Result<(), ContainerError> {
        let (cgroups, snapshots, c) = (self.cgroups.clone(), self.snapshots.clone(), c.clone());
        let default_parent = self.default_parent.clone();
        let under_default = c.cgroup.as_ref().is_some_and(|cg| {
            self.driver
                .container_cgroup(&default_parent, &c.id)
                .is_ok_and(|p| p == *cg.path())
        });
        tokio::task::spawn_blocking(move || {
            if c.monitor_pid > 0 && monitor::read_exit(&c.dir).ok().flatten().is_none() {
                let _ = monitor::kill(&c.dir, Signal::SIGKILL as i32);
                let _ = monitor::wait_timeout(&c.dir, KILL_TIMEOUT);
            }
            wait_exit(c.monitor_pid, &c.dir, KILL_TIMEOUT);
            if let Some(cg) = &c.cgroup {
                cleanup_cgroup(&cgroups, cg)?;
            }
            if under_default {
                cgroups
                    .remove_if_unused(&default_parent)
                    .map_err(ContainerError::Cgroup)?;
            }
            snapshots.remove(&c.id).map_err(ContainerError::Snapshot)?;
            match std::fs::remove_dir_all(&c.dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(ContainerError::Io {
                    action: "remove the container state dir",
                    path: c.dir.clone(),
                    source,
                }),
            }
        })
        .await
        .map_err(ContainerError::Task)?
    }

    /// Stops and removes every container of `pod_id` (before the pod goes).
    pub async fn stop_pod(&self, pod_id: &str) -> Result<(), ContainerError> {
        let filter = super::Filter {
            pod_id: Some(pod_id.to_string()),
            ..Default::default()
        };
        for c in self.list(&filter)? {
            if c.pod_id == pod_id {
                self.stop(&c.id, Duration::ZERO).await?;
            }
        }
        Ok(())
    }

    /// Removes every container of `pod_id`; returns their ids.
    pub async fn remove_pod(&self, pod_id: &str) -> Result<Vec<String>, ContainerError> {
        let filter = super::Filter {
            pod_id: Some(pod_id.to_string()),
            ..Default::default()
        };
        let mut removed = Vec::new();
        for c in self.list(&filter)? {
            if c.pod_id == pod_id {
                self.remove(&c.id).await?;
                removed.push(c.id);
            }
        }
        Ok(removed)
    }
}

fn cleanup_cgroup(
    cgroups: &crate::runtime::cgroup::Cgroups,
    cg: &Cgroup,
) -> Result<(), ContainerError> {
    if cgroups.exists(cg) {
        cgroups
            .kill_all(cg, KILL_TIMEOUT)
            .map_err(ContainerError::Cgroup)?;
    }
    cgroups.delete(cg).map_err(ContainerError::Cgroup)
}

/// Waits (at most `timeout`) until the monitor `pid` of the state dir
/// `dir` has exited, on a pidfd: the monitor is reparented to whatever
/// init the host has, and a zombie that init reaps late (seconds, on some
/// VMs) has exited all the same. A pid whose process does not sit in `dir`
/// (the monitor's working directory) was recycled: not ours to wait for.
fn wait_exit(pid: i32, dir: &Path, timeout: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    if pid <= 0 {
        return;
    }
    let Ok(pidfd) = crate::runtime::sys::pidfd_open(pid) else {
        return;
    };
    let exited = |ms: PollTimeout| {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        !matches!(poll(&mut fds, ms), Ok(0))
    };
    if exited(PollTimeout::ZERO) {
        return;
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    if cwd.is_none() || cwd != std::fs::canonicalize(dir).ok() {
        return;
    }
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    exited(PollTimeout::from(ms));
}

pub(super) fn state_name(s: super::State) -> &'static str {
    match s {
        super::State::Created => "created",
        super::State::Running => "running",
        super::State::Exited => "exited",
        super::State::Unknown => "unknown",
    }
}

/// The image's STOPSIGNAL (`SIGQUIT`, `QUIT` or `3`), else SIGTERM.
pub(super) fn stop_signal(name: &str) -> Signal {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().unwrap_or(Signal::SIGTERM)
}

/// Root lacks CAP_SYS_RESOURCE here: a score below the current one is
/// refused by the kernel, so it is raised to the current one, with a note.
fn set_oom_score_adj(pid: i32, wanted: i64) {
    let path = format!("/proc/{pid}/oom_score_adj");
    let current: i64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let value = wanted.clamp(-1000, 1000);
    let value = if value < current {
        tracing::info!(
            pid,
            wanted,
            current,
            "oom_score_adj raised to the current value"
        );
        current
    } else {
        value
    };
    if let Err(e) = std::fs::write(&path, value.to_string()) {
        tracing::warn!(pid, value, error = %e, "cannot set oom_score_adj");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_below_the_directory() {
        assert_eq!(log_file("", "").expect("none"), None);
        assert!(log_file("", "x.log").is_err());
        assert!(log_file("/var/log/pods/x", "").is_err());
        assert!(log_file("/var/log/pods/x", "../x.log").is_err());
        assert!(log_file("/var/log/pods/x", "/x.log").is_err());
        assert!(log_file("rel", "x.log").is_err());
        assert_eq!(
            log_file("/var/log/pods/x", "c/0.log").expect("ok"),
            Some(PathBuf::from("/var/log/pods/x/c/0.log"))
        );
    }

    #[test]
    fn stop_signals() {
        assert_eq!(stop_signal(""), Signal::SIGTERM);
        assert_eq!(stop_signal("SIGQUIT"), Signal::SIGQUIT);
        assert_eq!(stop_signal("quit"), Signal::SIGQUIT);
        assert_eq!(stop_signal("9"), Signal::SIGKILL);
    }
}
