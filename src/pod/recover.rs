//! Start-up recovery: reconcile the stored pods with what survived.
//!
//! Assumptions: namespace bind mounts and holders outlive the daemon (they
//! do, until a reboot empties `state_dir`); a stored Ready pod whose
//! namespace files are no longer nsfs mounts, or whose holder is gone,
//! cannot work any more and becomes NotReady (kubelet then recreates it);
//! a pod directory or a CNI attachment with no record is the remains of a
//! run that crashed half-way, and is torn down.

use super::sandbox::ns_dir;
use super::spec::PidMode;
use super::teardown::{cgroup_from_files, remove_dir};
use super::{PodError, PodState, Sandbox, Service};
use crate::runtime::namespace::{self, ns_file};
use crate::runtime::pid_holder;
use crate::state::Bucket;

impl Service {
    /// Rebuilds the name reservations, marks pods whose namespaces did not
    /// survive as NotReady, and clears remains no record owns.
    pub(super) async fn recover(&self) -> Result<(), PodError> {
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
            if pod.netns_path().is_some()
                && let Err(e) = self.net.teardown(&id).await
            {
                tracing::warn!(pod = %id, error = %crate::cri::chain(&e), "cni del of a lost pod failed");
            }
            if let Err(e) = self.tear_down(&pod.dir, pod.holder, pod.cgroup.as_ref()) {
                tracing::warn!(pod = %id, error = %crate::cri::chain(&e), "cannot clean up a lost pod");
            }
            pod.state = PodState::NotReady;
            pod.holder = None;
            pod.ips.clear();
            self.store.put(Bucket::Pods, &id, &pod)?;
        }
        let known = |id: &str| pods.iter().any(|(known, _)| known == id);

        match self.net.attached_ids() {
            Ok(ids) => {
                for id in ids.iter().filter(|id| !known(id)) {
                    tracing::warn!(pod = %id, "releasing the network of an unfinished pod");
                    if let Err(e) = self.net.teardown(id).await {
                        tracing::warn!(pod = %id, error = %crate::cri::chain(&e), "cni del failed");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::cri::chain(&e), "cannot list cni attachments");
            }
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
            if known(&name) {
                continue;
            }
            let path = entry.path();
            tracing::warn!(dir = %path.display(), "removing the remains of an unfinished pod");
            let cgroup = cgroup_from_files(&path);
            let cleared = self
                .tear_down(&path, None, cgroup.as_ref())
                .and_then(|()| match &cgroup {
                    Some(cg) => self.cgroups.delete(cg).map_err(PodError::Cgroup),
                    None => Ok(()),
                })
                .and_then(|()| remove_dir(&path));
            if let Err(e) = cleared {
                tracing::warn!(dir = %path.display(), error = %crate::cri::chain(&e), "cannot remove pod remains");
            }
        }
        Ok(())
    }
}

/// Whether every namespace of a Ready pod is still held.
pub(super) fn is_intact(pod: &Sandbox) -> bool {
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
