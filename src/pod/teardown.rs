//! StopPodSandbox and RemovePodSandbox, and the one idempotent teardown
//! that rollback, stop, remove and recovery share: each step checks what
//! exists, so it can run any number of times, in the reverse order of
//! set-up (network, holder, cgroup processes, shm, namespaces; then, on
//! remove, the cgroup and the directory).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::sandbox::{cgroup_file, holder_pid_file, ns_dir, shm_dir};
use super::{Holder, PodError, PodState, Sandbox, Service};
use crate::runtime::cgroup::Cgroup;
use crate::runtime::namespace::{self, NsKind, ns_file, ns_inode};
use crate::runtime::{mount, pid_holder};
use crate::state::Bucket;

/// How long the processes of a sandbox cgroup get to die after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

impl Service {
    pub(super) fn take_child(&self, pid: i32) -> bool {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid)
    }

    /// Releases the pod's processes and mounts. Idempotent; what is already
    /// gone is skipped. The network is released before (it is async).
    pub(super) fn tear_down(
        &self,
        dir: &Path,
        holder: Option<Holder>,
        cgroup: Option<&Cgroup>,
    ) -> Result<(), PodError> {
        let holder = holder.or_else(|| holder_from_files(dir));
        if let Some(h) = holder {
            let ours = self.take_child(h.pid);
            pid_holder::kill(h.pid, h.pidns_inode, ours).map_err(PodError::Holder)?;
        }
        if let Some(cg) = cgroup {
            self.cgroups
                .kill_all(cg, KILL_TIMEOUT)
                .map_err(PodError::Cgroup)?;
        }
        mount::unmount(&shm_dir(dir)).map_err(PodError::Mount)?;
        namespace::release_all(&ns_dir(dir))?;
        Ok(())
    }

    /// Tears a pod down and deletes its cgroup and directory.
    pub(super) fn destroy(&self, pod: &Sandbox) -> Result<(), PodError> {
        let cgroup = pod.cgroup.clone().or_else(|| cgroup_from_files(&pod.dir));
        self.tear_down(&pod.dir, pod.holder, cgroup.as_ref())?;
        if let Some(cg) = &cgroup {
            self.cgroups.delete(cg).map_err(PodError::Cgroup)?;
        }
        remove_dir(&pod.dir)
    }

    pub(super) fn release_name(&self, key: &str, id: &str) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.get(key).map(String::as_str) == Some(id) {
            names.remove(key);
        }
    }

    /// Stops a pod: its network, processes and namespaces go, its record
    /// stays (NotReady) until removed. Stopping what is unknown or stopped
    /// succeeds.
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
        // DEL runs while the netns still exists, so plugins can clean inside.
        if pod.netns_path().is_some() {
            self.net.teardown(id).await.map_err(PodError::Network)?;
        }
        let this = Arc::clone(self);
        let (dir, holder, cgroup) = (pod.dir.clone(), pod.holder, pod.cgroup.clone());
        tokio::task::spawn_blocking(move || this.tear_down(&dir, holder, cgroup.as_ref()))
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

    /// Removes everything of a pod (record, directory, cgroup), stopping it
    /// first if needed. Removing what is unknown succeeds.
    pub async fn remove(self: &Arc<Self>, id_or_prefix: &str) -> Result<(), PodError> {
        let id = match self.resolve(id_or_prefix) {
            Ok(id) => id,
            Err(PodError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        if self.store.get::<Sandbox>(Bucket::Pods, &id)?.is_none() {
            return Ok(());
        }
        self.stop_locked(&id).await?;
        let Some(pod) = self.store.get::<Sandbox>(Bucket::Pods, &id)? else {
            return Ok(());
        };
        let this = Arc::clone(self);
        let stopped = pod.clone();
        tokio::task::spawn_blocking(move || this.destroy(&stopped))
            .await
            .map_err(PodError::Task)??;
        self.store.delete(Bucket::Pods, &id)?;
        self.release_name(&pod.spec.metadata.reservation_key(), &id);
        self.forget_lock(&id);
        tracing::info!(pod = %id, "pod sandbox removed");
        Ok(())
    }
}

/// The holder named by a pod directory's files (remains without a record,
/// or a record whose holder field was cleared).
pub(super) fn holder_from_files(dir: &Path) -> Option<Holder> {
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

/// The cgroup recorded in a pod directory.
pub(super) fn cgroup_from_files(dir: &Path) -> Option<Cgroup> {
    let raw = std::fs::read(cgroup_file(dir)).ok()?;
    serde_json::from_slice(&raw).ok()
}

pub(super) fn remove_dir(dir: &Path) -> Result<(), PodError> {
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
