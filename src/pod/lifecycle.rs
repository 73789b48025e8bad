//! Run, stop and remove a pod, and start-up recovery.
//!
//! Run reserves the pod's name, then sets up, in order: the state directory
//! and its files, the namespaces (configured from inside: hostname, loopback,
//! sysctls), the pod's `/dev/shm`, the PID-namespace holder; only then is the
//! record written. Any failure undoes what was done, in reverse, and releases
//! the name, so a failed run leaves nothing. Tearing down is one idempotent
//! function used by rollback, stop, remove and recovery alike: each step
//! checks what exists, so it can run any number of times.
//!
//! Recovery assumes: the namespace bind mounts and holders outlive the daemon
//! (they do, until a reboot wipes `state_dir`); a stored Ready pod whose
//! namespace files are no longer nsfs mounts, or whose holder is gone, cannot
//! work any more and becomes NotReady; a pod directory with no record is the
//! remains of a run that crashed and is torn down.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::files;
use super::sandbox::{holder_pid_file, ns_dir, own_namespaces, shm_dir};
use super::spec::{CheckedSysctl, PidMode, PodSpec, check_sysctls};
use super::{Holder, PodError, PodState, Sandbox, Service};
use crate::runtime::namespace::{self, NsKind, NsRequest, Sysctl, ns_file, ns_inode};
use crate::runtime::{mount, pid_holder};
use crate::state::Bucket;

/// Size of a pod's `/dev/shm`, as other runtimes default it.
const SHM_SIZE: u64 = 64 * 1024 * 1024;

impl Service {
    /// Creates a pod and returns its id once its record is durable. The work
    /// runs in its own task: a caller that gives up (deadline) does not leave
    /// a half-made pod, and kubelet's retry meets the reservation by name.
    pub async fn run(self: &Arc<Self>, spec: PodSpec) -> Result<String, PodError> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run_inner(spec).await })
            .await
            .map_err(PodError::Task)?
    }

    async fn run_inner(self: Arc<Self>, spec: PodSpec) -> Result<String, PodError> {
        if !spec.runtime_handler.is_empty()
            && !self
                .config
                .runtime_handlers
                .contains_key(&spec.runtime_handler)
        {
            return Err(PodError::UnknownHandler(spec.runtime_handler.clone()));
        }
        let sysctls = check_sysctls(&spec.sysctls, spec.namespaces)?;
        let id = hex::encode(rand::random::<[u8; 32]>());
        let key = spec.metadata.reservation_key();
        {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(holder) = names.get(&key) {
                return Err(PodError::NameReserved {
                    name: key,
                    id: holder.clone(),
                });
            }
            names.insert(key.clone(), id.clone());
        }
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let pod = Sandbox {
            dir: self.pods_dir().join(&id),
            id: id.clone(),
            spec,
            state: PodState::Ready,
            created_at,
            ips: Vec::new(),
            holder: None,
        };
        let this = Arc::clone(&self);
        let set_up = tokio::task::spawn_blocking(move || this.set_up(pod, &sysctls))
            .await
            .map_err(PodError::Task)
            .and_then(|r| r);
        let result = match set_up {
            Ok(pod) => match self.store.put(Bucket::Pods, &id, &pod) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let this = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || this.destroy(&pod)).await;
                    Err(e.into())
                }
            },
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.release_name(&key, &id);
            return Err(e);
        }
        tracing::info!(pod = %id, name = %key, "pod sandbox ready");
        Ok(id)
    }

    /// Builds the pod's resources; on error undoes its own steps.
    fn set_up(&self, mut pod: Sandbox, sysctls: &[CheckedSysctl]) -> Result<Sandbox, PodError> {
        match self.try_set_up(&mut pod, sysctls) {
            Ok(()) => Ok(pod),
            Err(e) => {
                if let Err(undo) = self.destroy(&pod) {
                    tracing::warn!(pod = %pod.id, error = %crate::cri::chain(&undo), "rollback of a failed run was incomplete");
                }
                Err(e)
            }
        }
    }

    fn try_set_up(&self, pod: &mut Sandbox, sysctls: &[CheckedSysctl]) -> Result<(), PodError> {
        let spec = &pod.spec;
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| PodError::Io {
                action,
                path,
                source,
            }
        };
        let ns = ns_dir(&pod.dir);
        std::fs::create_dir_all(&ns).map_err(io("create", &ns))?;

        let hostname = if spec.namespaces.host_network {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            spec.hostname.clone()
        };
        let write = |path: std::path::PathBuf, content: &[u8]| {
            files::write_atomic(&path, content).map_err(io("write", &path))
        };
        write(pod.hostname_path(), format!("{hostname}\n").as_bytes())?;
        let resolv = files::resolv_conf(spec.dns.as_ref())
            .map(String::into_bytes)
            .unwrap_or_else(|| files::host_file(files::HOST_RESOLV_CONF));
        write(pod.resolv_conf_path(), &resolv)?;
        let hosts = if spec.namespaces.host_network {
            files::host_file(files::HOST_HOSTS)
        } else {
            files::hosts(&hostname, &pod.ips).into_bytes()
        };
        write(pod.hosts_path(), &hosts)?;

        let kinds = own_namespaces(spec);
        if !kinds.is_empty() {
            namespace::create(NsRequest {
                dir: ns.clone(),
                hostname: (!spec.namespaces.host_network && !spec.hostname.is_empty())
                    .then(|| spec.hostname.clone()),
                kinds,
                sysctls: sysctls
                    .iter()
                    .map(|s| Sysctl {
                        name: s.name.clone(),
                        path: s.path.clone(),
                        value: s.value.clone(),
                    })
                    .collect(),
            })?;
        }

        if let Some(shm) = pod.shm_path() {
            mount::mount_shm(&shm, SHM_SIZE).map_err(PodError::Mount)?;
        }

        if spec.namespaces.pid == PidMode::Pod {
            let args = pid_holder::HolderArgs {
                net: pod.netns_path(),
                ipc: pod.ipc_ns_path(),
                uts: pod.uts_ns_path(),
            };
            let pid = pid_holder::spawn(&args).map_err(PodError::Holder)?;
            self.children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pid);
            // Recorded before anything else can fail, so rollback kills it.
            let pid_file = holder_pid_file(&pod.dir);
            let written = std::fs::write(&pid_file, format!("{pid}\n"));
            let bound = namespace::bind_process_ns(pid, &ns, NsKind::Pid);
            let inode = ns_inode(&ns_file(&ns, NsKind::Pid));
            match (written, bound, inode) {
                (Ok(()), Ok(_), Some(pidns_inode)) => {
                    pod.holder = Some(Holder { pid, pidns_inode });
                }
                (written, bound, _) => {
                    let ours = self.take_child(pid);
                    let inode = ns_inode(Path::new(&format!("/proc/{pid}/ns/pid")));
                    if let Some(inode) = inode {
                        let _ = pid_holder::kill(pid, inode, ours);
                    }
                    written.map_err(io("write", &pid_file))?;
                    bound?;
                    return Err(PodError::Io {
                        action: "stat",
                        path: ns_file(&ns, NsKind::Pid),
                        source: std::io::Error::other("namespace file vanished"),
                    });
                }
            }
        }
        Ok(())
    }

    fn take_child(&self, pid: i32) -> bool {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid)
    }

    /// Releases the pod's processes and mounts, in the reverse order of
    /// set-up. Idempotent; what is already gone is skipped.
    fn tear_down(&self, dir: &Path, holder: Option<Holder>) -> Result<(), PodError> {
        let holder = holder.or_else(|| holder_from_files(dir));
        if let Some(h) = holder {
            let ours = self.take_child(h.pid);
            pid_holder::kill(h.pid, h.pidns_inode, ours).map_err(PodError::Holder)?;
        }
        mount::unmount(&shm_dir(dir)).map_err(PodError::Mount)?;
        namespace::release_all(&ns_dir(dir))?;
        Ok(())
    }

    /// Tears the pod down and deletes its directory.
    fn destroy(&self, pod: &Sandbox) -> Result<(), PodError> {
        self.tear_down(&pod.dir, pod.holder)?;
        remove_dir(&pod.dir)
    }

    fn release_name(&self, key: &str, id: &str) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.get(key).map(String::as_str) == Some(id) {
            names.remove(key);
        }
    }

    /// Stops a pod: its processes and namespaces go, its record stays
    /// (NotReady) until removed. Stopping what is unknown or stopped succeeds.
    pub async fn stop(self: &Arc<Self>, id_or_prefix: &str) -> Result<(), PodError> {
        let id = match self.resolve(id_or_prefix) {
            Ok(id) => id,
            Err(PodError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        self.stop_locked(&id).await
    }

    async fn stop_locked(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let Some(mut pod) = self.store.get::<Sandbox>(Bucket::Pods, id)? else {
            return Ok(());
        };
        let this = Arc::clone(self);
        let (dir, holder) = (pod.dir.clone(), pod.holder);
        tokio::task::spawn_blocking(move || this.tear_down(&dir, holder))
            .await
            .map_err(PodError::Task)??;
        if pod.state != PodState::NotReady || pod.holder.is_some() || !pod.ips.is_empty() {
            pod.state = PodState::NotReady;
            pod.holder = None;
            pod.ips.clear();
            self.store.put(Bucket::Pods, id, &pod)?;
            tracing::info!(pod = %id, "pod sandbox stopped");
        }
        Ok(())
    }

    /// Removes everything of a pod, stopping it first if needed. Removing
    /// what is unknown succeeds.
    pub async fn remove(self: &Arc<Self>, id_or_prefix: &str) -> Result<(), PodError> {
        let id = match self.resolve(id_or_prefix) {
            Ok(id) => id,
            Err(PodError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let Some(pod) = self.store.get::<Sandbox>(Bucket::Pods, &id)? else {
            return Ok(());
        };
        self.stop_locked(&id).await?;
        let this = Arc::clone(self);
        let dir = pod.dir.clone();
        tokio::task::spawn_blocking(move || {
            this.tear_down(&dir, None)?;
            remove_dir(&dir)
        })
        .await
        .map_err(PodError::Task)??;
        self.store.delete(Bucket::Pods, &id)?;
        self.release_name(&pod.spec.metadata.reservation_key(), &id);
        self.forget_lock(&id);
        tracing::info!(pod = %id, "pod sandbox removed");
        Ok(())
    }

    /// Start-up: rebuild the name reservations, mark pods whose namespaces
    /// did not survive as NotReady, and clear directories no record owns.
    pub(super) fn recover(&self) -> Result<(), PodError> {
        let pods: Vec<(String, Sandbox)> = self.store.list(Bucket::Pods)?;
        for (id, mut pod) in pods.iter().cloned() {
            self.names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pod.spec.metadata.reservation_key(), id.clone());
            if pod.state != PodState::Ready || is_intact(&pod) {
                continue;
            }
            tracing::warn!(pod = %id, "pod sandbox lost its namespaces (reboot?); marking it not ready");
            if let Err(e) = self.tear_down(&pod.dir, pod.holder) {
                tracing::warn!(pod = %id, error = %crate::cri::chain(&e), "cannot clean up a lost pod");
            }
            pod.state = PodState::NotReady;
            pod.holder = None;
            pod.ips.clear();
            self.store.put(Bucket::Pods, &id, &pod)?;
        }
        let dir = self.pods_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(PodError::Io {
                    action: "read",
                    path: dir,
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if pods.iter().any(|(id, _)| *id == name) {
                continue;
            }
            tracing::warn!(dir = %entry.path().display(), "removing the remains of an unfinished pod");
            let path = entry.path();
            if let Err(e) = self.tear_down(&path, None).and_then(|()| remove_dir(&path)) {
                tracing::warn!(dir = %path.display(), error = %crate::cri::chain(&e), "cannot remove pod remains");
            }
        }
        Ok(())
    }
}

/// Whether every namespace of a Ready pod is still held.
fn is_intact(pod: &Sandbox) -> bool {
    let ns = ns_dir(&pod.dir);
    let files_held = pod
        .own_namespaces()
        .into_iter()
        .all(|kind| namespace::is_held(&ns_file(&ns, kind)));
    let holder_alive = match (pod.spec.namespaces.pid, pod.holder) {
        (PidMode::Pod, Some(h)) => pid_holder::is_alive(h.pid, h.pidns_inode),
        (PidMode::Pod, None) => false,
        _ => true,
    };
    files_held && holder_alive
}

/// The holder named by a pod directory's files (for remains without a record).
fn holder_from_files(dir: &Path) -> Option<Holder> {
    let pid = std::fs::read_to_string(holder_pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let file = ns_file(&ns_dir(dir), NsKind::Pid);
    if !namespace::is_held(&file) {
        return None;
    }
    Some(Holder {
        pid,
        pidns_inode: ns_inode(&file)?,
    })
}

fn remove_dir(dir: &Path) -> Result<(), PodError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PodError::Io {
            action: "remove",
            path: dir.to_path_buf(),
            source,
        }),
    }
}
