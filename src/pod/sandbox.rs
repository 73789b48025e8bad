//! The stored sandbox record (bucket `pods`, key = id) and its state machine.
//!
//! ```text
//!   RunPodSandbox ──► Ready ──StopPodSandbox──► NotReady ──RemovePodSandbox──► (gone)
//!                       │                          ▲
//!                       └── start-up finds its ────┘
//!                           namespaces gone (reboot)
//! ```
//! A record is written only once every resource of the pod exists, so a
//! stored Ready pod is whole; a crash half-way through a run leaves a state
//! directory with no record, which start-up recovery removes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{PidMode, PodSpec};
use crate::runtime::cgroup::Cgroup;
use crate::runtime::namespace::{NsKind, ns_file};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodState {
    Ready,
    NotReady,
}

/// The live process holding a pod PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: i32,
    /// Inode of its PID namespace: tells the holder from a recycled pid.
    pub pidns_inode: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub spec: PodSpec,
    pub state: PodState,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    /// `<state_dir>/pods/<id>`: namespace files, etc files, shm.
    pub dir: PathBuf,
    /// Pod IPs, primary first. Empty for host-network pods.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub holder: Option<Holder>,
    /// The sandbox's own cgroup, `<cgroup_parent>/<id>` (cgroupfs) or
    /// `<slice>/yonggi-<id>.scope` (systemd), where the holder runs, as a
    /// pause container would; `None` without a cgroup parent.
    #[serde(default)]
    pub cgroup: Option<Cgroup>,
}

impl Sandbox {
    pub fn is_ready(&self) -> bool {
        self.state == PodState::Ready
    }

    fn ns_dir(&self) -> PathBuf {
        ns_dir(&self.dir)
    }

    /// The namespaces this pod holds in files, given its modes.
    pub fn own_namespaces(&self) -> Vec<NsKind> {
        own_namespaces(&self.spec)
    }

    /// The pod's network namespace file; `None` for a host-network pod.
    pub fn netns_path(&self) -> Option<PathBuf> {
        (!self.spec.namespaces.host_network).then(|| ns_file(&self.ns_dir(), NsKind::Net))
    }

    /// The pod's IPC namespace file; `None` with host IPC.
    pub fn ipc_ns_path(&self) -> Option<PathBuf> {
        (!self.spec.namespaces.host_ipc).then(|| ns_file(&self.ns_dir(), NsKind::Ipc))
    }

    /// The pod's UTS namespace file; `None` for a host-network pod, which
    /// shares the node's hostname as kubelet expects.
    pub fn uts_ns_path(&self) -> Option<PathBuf> {
        (!self.spec.namespaces.host_network).then(|| ns_file(&self.ns_dir(), NsKind::Uts))
    }

    /// The pod's user namespace file; `Some` only for a pod with mappings.
    /// Its network, IPC and UTS namespaces are then owned by it.
    pub fn userns_path(&self) -> Option<PathBuf> {
        self.spec
            .userns
            .is_some()
            .then(|| ns_file(&self.ns_dir(), NsKind::User))
    }

    /// The pod's PID namespace file; `Some` only with a pod-level PID namespace.
    pub fn pid_ns_path(&self) -> Option<PathBuf> {
        (self.spec.namespaces.pid == PidMode::Pod).then(|| ns_file(&self.ns_dir(), NsKind::Pid))
    }

    pub fn hostname_path(&self) -> PathBuf {
        self.dir.join("hostname")
    }

    pub fn hosts_path(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    pub fn resolv_conf_path(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    /// The pod's `/dev/shm`; `None` with host IPC (containers use the node's).
    pub fn shm_path(&self) -> Option<PathBuf> {
        (!self.spec.namespaces.host_ipc).then(|| shm_dir(&self.dir))
    }

    /// Details for `PodSandboxStatus` with `verbose`, as JSON.
    pub fn verbose_info(&self) -> serde_json::Value {
        let path = |p: Option<PathBuf>| p.map(|p| p.display().to_string());
        serde_json::json!({
            "id": self.id,
            "state": self.state,
            "pid": self.holder.map(|h| h.pid),
            "stateDir": self.dir.display().to_string(),
            "netNamespace": path(self.netns_path()),
            "ipcNamespace": path(self.ipc_ns_path()),
            "utsNamespace": path(self.uts_ns_path()),
            "pidNamespace": path(self.pid_ns_path()),
            "userNamespace": path(self.userns_path()),
            "hostname": path(Some(self.hostname_path())),
            "hosts": path(Some(self.hosts_path())),
            "resolvConf": path(Some(self.resolv_conf_path())),
            "shm": path(self.shm_path()),
            "ips": self.ips,
            "cgroup": self.cgroup.as_ref().map(|c| c.path().as_str().to_string()),
            "config": self.spec,
        })
    }
}

pub(super) fn ns_dir(dir: &Path) -> PathBuf {
    dir.join("ns")
}

pub(super) fn shm_dir(dir: &Path) -> PathBuf {
    dir.join("shm")
}

pub(super) fn cgroup_file(dir: &Path) -> PathBuf {
    dir.join("cgroup.json")
}

pub(super) fn holder_pid_file(dir: &Path) -> PathBuf {
    dir.join("holder.pid")
}

/// Network, IPC and UTS namespaces a pod creates (the PID one needs a holder).
pub(super) fn own_namespaces(spec: &PodSpec) -> Vec<NsKind> {
    let mut kinds = Vec::new();
    if !spec.namespaces.host_network {
        kinds.push(NsKind::Net);
        kinds.push(NsKind::Uts);
    }
    if !spec.namespaces.host_ipc {
        kinds.push(NsKind::Ipc);
    }
    kinds
}
