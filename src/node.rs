//! Node-level runtime facts: identity, readiness conditions, the cgroup driver
//! and the pod CIDR kubelet hands down with `UpdateRuntimeConfig`.

use std::sync::{Arc, RwLock};

use crate::config::{CgroupDriver, Config};
use crate::state::{Bucket, Store, StoreError};

pub const RUNTIME_NAME: &str = "yonggi";
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The CRI API version served.
pub const API_VERSION: &str = "v1";

const POD_CIDR_KEY: &str = "pod_cidr";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("pod CIDR {0:?} is not an IP network like 10.244.0.0/24 (or an IPv4,IPv6 pair)")]
    BadPodCidr(String),
    #[error("cannot persist node settings")]
    Store(#[from] StoreError),
}

/// One condition of `Status`, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

pub struct Node {
    config: Arc<Config>,
    store: Arc<Store>,
    pod_cidr: RwLock<Option<String>>,
}

impl Node {
    /// Loads the persisted pod CIDR, so a restarted daemon keeps what kubelet sent.
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> Result<Node, NodeError> {
        let pod_cidr = store.get::<String>(Bucket::Runtime, POD_CIDR_KEY)?;
        Ok(Node {
            config,
            store,
            pod_cidr: RwLock::new(pod_cidr),
        })
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.config.effective_cgroup_driver()
    }

    /// The pod CIDR from kubelet if it sent one, else the configured default.
    pub fn pod_cidr(&self) -> String {
        let guard = self.pod_cidr.read().unwrap_or_else(|e| e.into_inner());
        guard
            .clone()
            .unwrap_or_else(|| self.config.network.pod_cidr.clone())
    }

    /// Stores kubelet's pod CIDR durably before answering. An empty CIDR is
    /// what kubelet sends when it has none; it changes nothing.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), NodeError> {
        if cidr.is_empty() {
            return Ok(());
        }
        if crate::config::parse_cidr_list(cidr).is_none() {
            return Err(NodeError::BadPodCidr(cidr.to_string()));
        }
        self.store.put(Bucket::Runtime, POD_CIDR_KEY, &cidr)?;
        let mut guard = self.pod_cidr.write().unwrap_or_else(|e| e.into_inner());
        *guard = Some(cidr.to_string());
        Ok(())
    }

    pub fn conditions(&self) -> Vec<Condition> {
        let network = crate::net::readiness(&self.config, &self.pod_cidr());
        vec![
            Condition {
                kind: "RuntimeReady",
                ready: true,
                reason: String::new(),
                message: String::new(),
            },
            Condition {
                kind: "NetworkReady",
                ready: network.ready,
                reason: network.reason,
                message: network.message,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidr_is_validated_and_persisted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Arc::new(Config::default());
        {
            let store = Arc::new(Store::open(dir.path()).expect("store"));
            let node = Node::new(config.clone(), store).expect("node");
            assert_eq!(node.pod_cidr(), config.network.pod_cidr);
            assert!(matches!(
                node.set_pod_cidr("nonsense"),
                Err(NodeError::BadPodCidr(_))
            ));
            node.set_pod_cidr("").expect("empty is a no-op");
            node.set_pod_cidr("10.98.0.0/16,fd00:98::/64")
                .expect("dual-stack pair");
            node.set_pod_cidr("10.99.0.0/16").expect("valid cidr");
        }
        let store = Arc::new(Store::open(dir.path()).expect("reopen"));
        let node = Node::new(config, store).expect("node");
        assert_eq!(node.pod_cidr(), "10.99.0.0/16");
    }
}
