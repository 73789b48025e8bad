//! Containers: CRI config + image → OCI spec, an overlay rootfs, a cgroup
//! under the pod's, and a monitor process that runs the container and
//! outlives the daemon. The stored record (bucket `containers`) is written
//! before each RPC answers; live facts (running, exit code) come from the
//! monitor's files, so they are right after a daemon restart too.
//!
//! ```text
//! CreateContainer ──► Created ──Start──► Running ──exit/Stop──► Exited ──Remove──► (gone)
//!        └──────────────────────────Remove (any state)─────────────────────┘
//! ```

mod confine;
mod devices;
mod lifecycle;
mod ops;
pub use ops::{ContainerStats, EXEC_OUTPUT_CAP, ExecOutput};
mod spec;
mod stream;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use spec::{
    ContainerResources, ContainerSpec, DeviceRequest, ImageInfo, Metadata, Propagation, VolumeMount,
};
pub use stream::StreamBackend;

use crate::config::Config;
use crate::monitor::{ExitStatus, MonitorError};
use crate::pod::PodError;
use crate::runtime::cgroup::{Cgroup, CgroupError, Cgroups, Driver};
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::state::{Bucket, IdMatch, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("image {0:?} not found: pull it first")]
    ImageNotFound(String),
    #[error("container id prefix {prefix:?} is ambiguous: it matches {count} containers")]
    AmbiguousId { prefix: String, count: usize },
    #[error("container name {name:?} is already reserved by container {id}")]
    NameReserved { name: String, id: String },
    #[error("pod sandbox {0} is not ready")]
    PodNotReady(String),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(
        "volume {host_path} asks {wanted} propagation but its host mount {mount_point} is {actual}"
    )]
    HostPropagation {
        host_path: PathBuf,
        mount_point: PathBuf,
        wanted: &'static str,
        actual: &'static str,
    },
    #[error("image {0:?} gives no command to run and the request has none")]
    NoCommand(String),
    #[error("security context")]
    Security(#[source] crate::security::Error),
    #[error("seccomp")]
    Seccomp(#[source] crate::runtime::seccomp::Error),
    #[error("reading the runtime's own capabilities")]
    OwnCapabilities(#[source] std::io::Error),
    #[error("container {id} is {state}, not {wanted}")]
    WrongState {
        id: String,
        state: &'static str,
        wanted: &'static str,
    },
    #[error("exec setup failed: {0}")]
    ExecSetup(String),
    #[error("command timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("building the OCI spec")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("container rootfs")]
    Snapshot(#[source] SnapshotError),
    #[error("container cgroup")]
    Cgroup(#[source] CgroupError),
    #[error("container monitor")]
    Monitor(#[source] MonitorError),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a blocking container task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot persist container state")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Exited,
    Unknown,
}

/// The stored record of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub pod_id: String,
    pub spec: ContainerSpec,
    pub image: ImageInfo,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    /// `<state_dir>/containers/<id>`: the monitor's files.
    pub dir: PathBuf,
    /// The CRI log file (absolute), empty when the pod has no log directory.
    pub log_path: PathBuf,
    pub cgroup: Option<Cgroup>,
    #[serde(default)]
    pub init_pid: i32,
    #[serde(default)]
    pub monitor_pid: i32,
    /// Set once the container is seen exited.
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    /// Set when the container was started (a Created one has none).
    #[serde(default)]
    pub started: bool,
    /// uid the container runs as.
    #[serde(default)]
    pub uid: u32,
    /// Its primary gid.
    #[serde(default)]
    pub gid: u32,
    /// Its groups, the primary gid first (what `ContainerStatus.user`
    /// reports as supplemental groups, as containerd does).
    #[serde(default)]
    pub groups: Vec<u32>,
}

impl Container {
    pub fn state(&self) -> State {
        if self.exit.is_some() {
            State::Exited
        } else if self.started {
            State::Running
        } else {
            State::Created
        }
    }

    /// `Completed`, `Error` or `OOMKilled` for an exited container.
    pub fn reason(&self) -> &'static str {
        match &self.exit {
            Some(e) if e.oom_killed => "OOMKilled",
            Some(e) if e.exit_code == 0 => "Completed",
            Some(_) => "Error",
            None => "",
        }
    }

    pub fn spec_json(&self) -> serde_json::Value {
        let path = crate::monitor::Paths::spec(&self.dir);
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// What ListContainers may filter on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub id: Option<String>,
    pub pod_id: Option<String>,
    pub state: Option<State>,
    pub labels: BTreeMap<String, String>,
}

pub struct Service {
    config: Arc<Config>,
    store: Arc<Store>,
    pods: Arc<crate::pod::Service>,
    cgroups: Cgroups,
    driver: Driver,
    /// The parent of containers of pods with no cgroup parent, removed
    /// once its last container is.
    default_parent: crate::runtime::cgroup::CgroupPath,
    snapshots: Snapshotter,
    /// Reservation key (pod id, name, attempt) → the id holding it.
    names: Mutex<HashMap<String, String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Service {
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        pods: Arc<crate::pod::Service>,
        cgroups: Cgroups,
    ) -> Result<Service, ContainerError> {
        let snapshots = Snapshotter::new(
            &config.root.join("snapshots"),
            crate::snapshot::Backend::Auto,
        );
        let driver = Driver::from(config.effective_cgroup_driver());
        let default_parent = driver
            .pod_cgroup(&config.default_cgroup_parent())
            .map_err(ContainerError::Cgroup)?;
        let service = Service {
            driver,
            default_parent,
            config,
            store,
            pods,
            cgroups,
            snapshots,
            names: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        };
        service.recover()?;
        Ok(service)
    }

    /// Where writable layers live (ContainerStats' filesystem id).
    pub fn snapshots_root(&self) -> PathBuf {
        self.config.root.join("snapshots")
    }

    fn containers_dir(&self) -> PathBuf {
        self.config.state_dir.join("containers")
    }

    /// Start-up: names are reserved again, and containers whose monitor
    /// finished while the daemon was away get their exit status.
    fn recover(&self) -> Result<(), ContainerError> {
        let all: Vec<(String, Container)> = self.store.list(Bucket::Containers)?;
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for (id, c) in all {
            names.insert(reservation_key(&c.pod_id, &c.spec.metadata), id.clone());
            let seen = self.observe(c.clone());
            if seen.exit != c.exit {
                self.store.put(Bucket::Containers, &id, &seen)?;
            }
        }
        drop(names);
        // Left by a daemon that died before removing it.
        if let Err(e) = self.cgroups.remove_if_unused(&self.default_parent) {
            tracing::warn!(error = %crate::cri::chain(&e), "cannot remove the unused default cgroup parent");
        }
        Ok(())
    }

    /// The record with what the monitor's files say now.
    fn observe(&self, mut c: Container) -> Container {
        if c.started && c.exit.is_none() {
            match crate::monitor::read_exit(&c.dir) {
                Ok(Some(exit)) => c.exit = Some(exit),
                Ok(None) => {
                    if !pid_alive(c.monitor_pid) {
                        // The monitor died without a word (machine reboot,
                        // SIGKILL): the container is gone with it.
                        c.exit = Some(ExitStatus {
                            exit_code: 255,
                            signal: None,
                            finished_at_ns: now_ns(),
                            oom_killed: false,
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(id = %c.id, error = %crate::cri::chain(&e), "exit status unreadable")
                }
            }
        }
        c
    }

    pub fn get(&self, id_or_prefix: &str) -> Result<Container, ContainerError> {
        let id = self.resolve(id_or_prefix)?;
        let c = self
            .store
            .get::<Container>(Bucket::Containers, &id)?
            .ok_or_else(|| ContainerError::NotFound(id_or_prefix.to_string()))?;
        Ok(self.observe(c))
    }

    pub fn resolve(&self, id_or_prefix: &str) -> Result<String, ContainerError> {
        match self.store.resolve_id(Bucket::Containers, id_or_prefix)? {
            IdMatch::One(id) => Ok(id),
            IdMatch::None => Err(ContainerError::NotFound(id_or_prefix.to_string())),
            IdMatch::Ambiguous(count) => Err(ContainerError::AmbiguousId {
                prefix: id_or_prefix.to_string(),
                count,
            }),
        }
    }

    pub fn list(&self, filter: &Filter) -> Result<Vec<Container>, ContainerError> {
        let all: Vec<(String, Container)> = self.store.list(Bucket::Containers)?;
        Ok(all
            .into_iter()
            .filter(|(id, _)| filter.id.as_ref().is_none_or(|f| id.starts_with(f)))
            .filter(|(_, c)| {
                filter
                    .pod_id
                    .as_ref()
                    .is_none_or(|f| c.pod_id.starts_with(f))
            })
            .map(|(_, c)| self.observe(c))
            .filter(|c| filter.state.is_none_or(|s| c.state() == s))
            .filter(|c| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| c.spec.labels.get(k) == Some(v))
            })
            .collect())
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }
}

fn reservation_key(pod_id: &str, m: &Metadata) -> String {
    format!("{pod_id}_{}_{}", m.name, m.attempt)
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn pid_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
