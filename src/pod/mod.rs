//! Pod sandboxes: the namespaces a pod's containers share (no pause image:
//! bind-mounted namespace files, plus a `pod-init` holder for a pod PID
//! namespace), its hostname, `/etc/hosts`, `resolv.conf`, `/dev/shm` and
//! sysctls, and the durable record of each pod.
//!
//! Containers find what they join through [`Service::get`] and the path
//! accessors of [`Sandbox`].

mod files;
mod lifecycle;
mod recover;
mod sandbox;
mod spec;
mod teardown;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use sandbox::{Holder, PodState, Sandbox};
pub use spec::{DnsConfig, Metadata, NamespaceModes, PidMode, PodSpec, PortMapping, Protocol};

use crate::config::Config;
use crate::net::NetError;
use crate::runtime::cgroup::{CgroupError, Cgroups, Driver};
use crate::runtime::mount::MountError;
use crate::runtime::namespace::NsError;
use crate::runtime::pid_holder::HolderError;
use crate::state::{Bucket, IdMatch, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod sandbox {0:?} not found")]
    NotFound(String),
    #[error("pod sandbox id prefix {prefix:?} is ambiguous: it matches {count} sandboxes")]
    AmbiguousId { prefix: String, count: usize },
    #[error("pod sandbox name {name:?} is already reserved by sandbox {id}")]
    NameReserved { name: String, id: String },
    #[error("sysctl {name:?} is not allowed: {reason}")]
    InvalidSysctl { name: String, reason: String },
    #[error("runtime handler {0:?} is not configured (see [runtime_handlers] in the config)")]
    UnknownHandler(String),
    #[error("cannot set up the pod's namespaces")]
    Namespace(#[source] NsError),
    #[error("cannot start the pod's pid namespace holder")]
    Holder(#[source] HolderError),
    #[error("cannot set up the pod's mounts")]
    Mount(#[source] MountError),
    #[error("pod network (cni)")]
    Network(#[source] NetError),
    #[error("pod cgroup")]
    Cgroup(#[source] CgroupError),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a blocking pod task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot persist pod sandbox state")]
    Store(#[from] StoreError),
}

impl From<NsError> for PodError {
    fn from(e: NsError) -> PodError {
        match e {
            NsError::UnknownSysctl { name, path } => PodError::InvalidSysctl {
                reason: format!("this kernel has no /proc/sys/{}", path.display()),
                name,
            },
            NsError::Sysctl {
                name,
                value,
                source,
            } => PodError::InvalidSysctl {
                reason: format!("the kernel refused the value {value:?}: {source}"),
                name,
            },
            e => PodError::Namespace(e),
        }
    }
}

/// What ListPodSandbox may filter on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// An id or a prefix of one.
    pub id: Option<String>,
    pub state: Option<PodState>,
    /// Every pair must be among the pod's labels.
    pub labels: BTreeMap<String, String>,
}

/// The pod service. One per daemon; cheap to share behind an `Arc`.
pub struct Service {
    config: Arc<Config>,
    store: Arc<Store>,
    net: Arc<crate::net::Service>,
    cgroups: Cgroups,
    driver: Driver,
    /// Reservation key (name, namespace, uid, attempt) → the id holding it.
    names: Mutex<HashMap<String, String>>,
    /// One lock per pod id: stop and remove of one pod never interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Holder pids this process cloned (and so must reap).
    children: Mutex<HashSet<i32>>,
}

impl Service {
    /// Opens the service over the store and reconciles stored pods with what
    /// survived on the machine (see [`lifecycle`]'s recovery notes).
    pub async fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        net: Arc<crate::net::Service>,
        cgroups: Cgroups,
    ) -> Result<Service, PodError> {
        let service = Service {
            driver: Driver::from(config.effective_cgroup_driver()),
            config,
            store,
            net,
            cgroups,
            names: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            children: Mutex::new(HashSet::new()),
        };
        service.recover().await?;
        Ok(service)
    }

    fn pods_dir(&self) -> PathBuf {
        self.config.state_dir.join("pods")
    }

    /// Resolves an id or a unique prefix of one to the sandbox, as it is
    /// now: a Ready pod whose namespaces or holder died is NotReady (kubelet
    /// then replaces it, as it does when a pause container dies).
    pub fn get(&self, id_or_prefix: &str) -> Result<Sandbox, PodError> {
        let id = self.resolve(id_or_prefix)?;
        self.store
            .get::<Sandbox>(Bucket::Pods, &id)?
            .map(observed)
            .ok_or_else(|| PodError::NotFound(id_or_prefix.to_string()))
    }

    /// The full id for `id_or_prefix`.
    pub fn resolve(&self, id_or_prefix: &str) -> Result<String, PodError> {
        match self.store.resolve_id(Bucket::Pods, id_or_prefix)? {
            IdMatch::One(id) => Ok(id),
            IdMatch::None => Err(PodError::NotFound(id_or_prefix.to_string())),
            IdMatch::Ambiguous(count) => Err(PodError::AmbiguousId {
                prefix: id_or_prefix.to_string(),
                count,
            }),
        }
    }

    pub fn list(&self, filter: &Filter) -> Result<Vec<Sandbox>, PodError> {
        let all: Vec<(String, Sandbox)> = self.store.list(Bucket::Pods)?;
        Ok(all
            .into_iter()
            .map(|(_, pod)| observed(pod))
            .filter(|pod| filter.id.as_ref().is_none_or(|id| pod.id.starts_with(id)))
            .filter(|pod| filter.state.is_none_or(|state| pod.state == state))
            .filter(|pod| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| pod.spec.labels.get(k) == Some(v))
            })
            .collect())
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn forget_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(id);
    }
}

fn observed(mut pod: Sandbox) -> Sandbox {
    if pod.state == PodState::Ready && !recover::is_intact(&pod) {
        pod.state = PodState::NotReady;
    }
    pod
}
