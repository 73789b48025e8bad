//! ADD and DEL of a pod's network: the plugin chain, `lo` (set up beside
//! the chain, in-process: loopback.rs), the rollback of a failed ADD, and the attachment cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::cache::{Attachment, Cache};
use super::conf;
use super::plugin::{self, Command, Invocation};
use super::{NetError, POD_IFNAME, PodNetwork, PodNetworkRequest, host, loopback, masq, result};
use crate::config::Config;
use crate::node::Node;

pub(crate) fn ipam_dir(config: &Config) -> PathBuf {
    config.root.join("net/ipam")
}

pub struct Service {
    config: Arc<Config>,
    node: Arc<Node>,
    cache: Cache,
    ipam_dir: PathBuf,
    /// The (bridge, CIDR) last found free, so a pod ADD does not re-read
    /// the host's routes each time.
    host_checked: tokio::sync::Mutex<Option<(String, String)>>,
    /// One lock per pod id: ADD and DEL of one pod never overlap.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Service {
    /// Opens the cache under `<root>/net`. A host conflict of the built-in
    /// network is logged here and reported by `status`, not fatal: a CNI
    /// config dropped in later makes the built-in network irrelevant.
    pub fn new(config: Arc<Config>, node: Arc<Node>) -> Result<Service, NetError> {
        let cache = Cache::open(config.root.join("net/cache"))?;
        let service = Service {
            ipam_dir: ipam_dir(&config),
            config,
            node,
            cache,
            host_checked: tokio::sync::Mutex::new(None),
            locks: Mutex::new(HashMap::new()),
        };
        let status = service.status();
        if !status.ready {
            tracing::warn!(message = %status.message, "pod network not ready");
        }
        Ok(service)
    }

    /// The `NetworkReady` condition now.
    pub fn status(&self) -> super::NetworkStatus {
        super::readiness(&self.config, &self.node.pod_cidr())
    }

    /// Ids of pods with a cached attachment (including an ADD that never
    /// finished), for the pod module's recovery after a restart.
    pub fn attached_ids(&self) -> Result<Vec<String>, NetError> {
        self.cache.ids()
    }

    /// DEL for every cached attachment whose network namespace no longer
    /// exists (after a reboot /run is empty; a pod stopped while yonggi was
    /// down), so their IPs and host rules are released. Run once at start;
    /// returns the ids released. A failure is logged and the entry kept for
    /// the pod's own teardown.
    pub async fn release_stale(&self) -> Result<Vec<String>, NetError> {
        let mut released = Vec::new();
        for id in self.cache.ids()? {
            let lock = self.lock(&id);
            let _guard = lock.lock().await;
            let Some(attachment) = self.entry(&id)? else {
                continue;
            };
            if is_netns(&attachment.netns) {
                continue;
            }
            match self.delete(&attachment).await {
                Ok(()) => released.push(id),
                Err(e) => tracing::warn!(
                    %id,
                    error = %super::chain(&e),
                    "cannot release the network of a pod whose netns is gone"
                ),
            }
        }
        Ok(released)
    }

    /// The pod's network as set up, from the cache; `None` if not attached.
    pub fn pod_network(&self, id: &str) -> Result<Option<PodNetwork>, NetError> {
        validate_id(id)?;
        Ok(self.entry(id)?.and_then(|a| a.pod_network))
    }

    /// The cached attachment of `id`. An unreadable entry (a machine crash
    /// right after it was first written can leave it empty) is logged and
    /// dropped: nothing can be deleted from it, and keeping it would fail
    /// the pod's teardown forever.
    fn entry(&self, id: &str) -> Result<Option<Attachment>, NetError> {
        match self.cache.get(id) {
            Err(e @ NetError::CacheCorrupt { .. }) => {
                tracing::warn!(%id, error = %e, "dropping unreadable cni cache entry");
                self.cache.remove(id)?;
                Ok(None)
            }
            other => other,
        }
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Attaches the pod to the network (CNI ADD down the chain, `lo` up).
    /// Repeating it for an attached pod with the same netns returns the
    /// cached result. On failure everything done so far is deleted again.
    pub async fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetwork, NetError> {
        validate(req)?;
        if !is_netns(&req.netns_path) {
            return Err(NetError::InvalidRequest {
                field: "netns_path",
                message: format!("{} is not a network namespace", req.netns_path.display()),
            });
        }
        let lock = self.lock(&req.id);
        let _guard = lock.lock().await;
        if let Some(existing) = self.entry(&req.id)? {
            if existing.netns == req.netns_path
                && let Some(network) = existing.pod_network
            {
                return Ok(network);
            }
            self.delete(&existing).await?;
        }
        let network = conf::load(&self.config.network, &self.node.pod_cidr(), &self.ipam_dir)?;
        if network.is_builtin() {
            self.prepare_host().await?;
        }
        let bins = &self.config.network.cni_bin_dirs;
        // Every binary is found before anything runs: a config naming a
        // missing plugin changes nothing on the host.
        for kind in network.required_plugins() {
            conf::find_plugin(bins, kind)?;
        }
        let paths = network
            .plugin_types()
            .map(|kind| conf::find_plugin(bins, kind))
            .collect::<Result<Vec<_>, _>>()?;

        let mut attachment = Attachment::new(
            &req.id,
            POD_IFNAME,
            &req.netns_path,
            cni_args(req),
            network,
            runtime_config(req),
        );
        attachment.skipped =
            skipped_plugins(&attachment.network.plugins, &attachment.runtime_config);
        self.cache.put(&attachment)?;

        let plugins = attachment.network.plugins.len();
        let (chain, lo) = tokio::join!(
            self.add_chain(&attachment, &paths),
            loopback::up(&attachment.netns)
        );
        let (ran, failed, outcome) = match (chain, lo) {
            (Ok(final_result), Ok(())) => {
                let parsed =
                    result::pod_network(&attachment.network.name, POD_IFNAME, &final_result)
                        .map(|net| (final_result, net))
                        .map_err(|message| NetError::BadResult {
                            plugin: attachment
                                .network
                                .plugin_types()
                                .last()
                                .unwrap_or_default()
                                .to_string(),
                            command: Command::Add.as_str(),
                            message,
                        });
                (plugins, None, parsed)
            }
            (Err((ran, e)), _) => (ran, ran.checked_sub(1), Err(e)),
            (Ok(_), Err(e)) => (plugins, None, Err(e)),
        };
        let result = match outcome {
            Ok((final_result, pod_network)) => {
                attachment.result = Some(final_result);
                attachment.pod_network = Some(pod_network.clone());
                self.cache.put(&attachment).map(|()| pod_network)
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.rollback(&attachment, ran, failed).await;
        }
        result
    }

    /// Detaches the pod (CNI DEL up the chain) from its cached attachment.
    /// Unknown ids and repeated calls succeed; a namespace that is already
    /// gone is passed as an empty `CNI_NETNS`, so plugins still release IPs
    /// and host-side rules.
    pub async fn teardown(&self, id: &str) -> Result<(), NetError> {
        validate_id(id)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        match self.entry(id)? {
            Some(attachment) => self.delete(&attachment).await,
            None => Ok(()),
        }
    }

    /// Asks the chain whether the pod's network is still as ADD left it
    /// (CNI CHECK with the cached result). Not part of ADD: it costs one exec
    /// per plugin. Networks older than CNI 0.4.0 have no CHECK and pass.
    pub async fn check(&self, id: &str) -> Result<(), NetError> {
        validate_id(id)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let Some(a) = self.entry(id)? else {
            return Err(NetError::NotAttached { id: id.to_string() });
        };
        let Some(prev) = a.result.as_ref() else {
            return Err(NetError::NotAttached { id: id.to_string() });
        };
        let version = a.network.cni_version.as_str();
        if matches!(version, "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1") {
            return Ok(());
        }
        let netns = a.netns.to_string_lossy();
        let inv = self.invocation(&a, &netns);
        for (index, plugin) in a.network.plugins.iter().enumerate() {
            if a.skipped.contains(&index) {
                continue;
            }
            let kind = plugin_type(plugin);
            let path = conf::find_plugin(&self.config.network.cni_bin_dirs, kind)?;
            let stdin = plugin::execution_config(
                plugin,
                &a.network.name,
                version,
                &a.runtime_config,
                Some(prev),
            );
            plugin::exec(&path, kind, Command::Check, &inv, &stdin).await?;
        }
        Ok(())
    }

    /// DEL of an attachment. One whose ADD finished is deleted strictly (in
    /// reverse order, stopping at the first failure, as the spec asks; the
    /// entry stays for a retry). One whose ADD never finished was already
    /// rolled back once: this is best effort, so a broken config cannot
    /// wedge the pod's removal forever.
    async fn delete(&self, a: &Attachment) -> Result<(), NetError> {
        let all = a.network.plugins.len();
        if a.result.is_some() {
            for index in (0..all).rev() {
                self.del_plugin(a, index, a.result.as_ref()).await?;
            }
        } else {
            for index in (0..all).rev() {
                if let Err(e) = self.del_plugin(a, index, None).await {
                    tracing::warn!(id = %a.id, error = %super::chain(&e), "cni DEL of an unfinished ADD failed");
                }
            }
        }
        self.cache.remove(&a.id)
    }

    /// Undoes a failed ADD: DEL of the `ran` plugins that ran, last first,
    /// continuing past failures. The failing plugin's own DEL may fail for
    /// the same reason its ADD did; any other failure keeps the cache entry,
    /// so the pod's teardown tries again.
    async fn rollback(&self, a: &Attachment, ran: usize, failed: Option<usize>) {
        let mut clean = true;
        for index in (0..ran).rev() {
            if let Err(e) = self.del_plugin(a, index, None).await {
                let error = super::chain(&e);
                if Some(index) == failed {
                    tracing::debug!(id = %a.id, %error, "cni DEL of the failed plugin failed");
                } else {
                    tracing::warn!(id = %a.id, %error, "cni DEL after a failed ADD failed");
                    clean = false;
                }
            }
        }
        if clean && let Err(e) = self.cache.remove(&a.id) {
            tracing::warn!(id = %a.id, error = %e, "cannot drop cni cache entry");
        }
    }

    /// Before the built-in network's first use (and again when the pod CIDR
    /// changed): its bridge name and subnet must be free, and the CIDR's
    /// masquerade rule in place. Serialised, so two first pods add one rule.
    async fn prepare_host(&self) -> Result<(), NetError> {
        let key = Some((self.config.network.bridge.clone(), self.node.pod_cidr()));
        let mut checked = self.host_checked.lock().await;
        if *checked == key {
            return Ok(());
        }
        if let Some((bridge, cidr)) = &key {
            host::check(bridge, cidr)?;
            for net in host::parse_pod_cidrs(cidr)? {
                masq::ensure(&net).await?;
            }
        }
        *checked = key;
        Ok(())
    }

    fn invocation<'a>(&'a self, a: &'a Attachment, netns: &'a str) -> Invocation<'a> {
        Invocation {
            container_id: &a.id,
            netns,
            ifname: &a.ifname,
            args: &a.cni_args,
            bin_dirs: &self.config.network.cni_bin_dirs,
        }
    }

    /// Runs ADD down the chain and returns the final result, or the error
    /// with how many plugins ran (the failing one included).
    async fn add_chain(
        &self,
        a: &Attachment,
        paths: &[PathBuf],
    ) -> Result<Value, (usize, NetError)> {
        let netns = a.netns.to_string_lossy();
        let inv = self.invocation(a, &netns);
        let list = &a.network;
        let mut prev: Option<Value> = None;
        for (index, (plugin, path)) in list.plugins.iter().zip(paths).enumerate() {
            if a.skipped.contains(&index) {
                continue;
            }
            let kind = plugin_type(plugin);
            let stdin = plugin::execution_config(
                plugin,
                &list.name,
                &list.cni_version,
                &a.runtime_config,
                prev.as_ref(),
            );
            let out = plugin::exec(path, kind, Command::Add, &inv, &stdin)
                .await
                .map_err(|e| (index + 1, e))?;
            if out.is_null() {
                return Err((
                    index + 1,
                    NetError::BadResult {
                        plugin: kind.to_string(),
                        command: Command::Add.as_str(),
                        message: "ADD printed no result".to_string(),
                    },
                ));
            }
            prev = Some(out);
        }
        prev.ok_or_else(|| {
            (
                0,
                NetError::ConfInvalid {
                    source_name: list.source.clone(),
                    message: "no plugins".to_string(),
                },
            )
        })
    }

    /// DEL of one plugin of the chain. The namespace is passed as empty
    /// when it is gone, as the spec allows; `lo` needs no DEL (it goes with
    /// the namespace).
    async fn del_plugin(
        &self,
        a: &Attachment,
        index: usize,
        prev: Option<&Value>,
    ) -> Result<(), NetError> {
        let Some(plugin) = a.network.plugins.get(index) else {
            return Ok(());
        };
        if a.skipped.contains(&index) {
            return Ok(());
        }
        let netns = if is_netns(&a.netns) {
            a.netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let inv = self.invocation(a, &netns);
        let kind = plugin_type(plugin);
        let path = conf::find_plugin(&self.config.network.cni_bin_dirs, kind)?;
        let list = &a.network;
        let stdin = plugin::execution_config(
            plugin,
            &list.name,
            &list.cni_version,
            &a.runtime_config,
            prev,
        );
        plugin::exec(&path, kind, Command::Del, &inv, &stdin)
            .await
            .map(drop)
    }
}

/// Plugins with nothing to do for this pod, left out of ADD and DEL: the
/// standard `portmap` acts only on the `portMappings` runtime config (its
/// ADD passes the previous result through unchanged without any), yet costs
/// an exec on ADD and iptables work on DEL. Most pods have no host ports.
fn skipped_plugins(
    plugins: &[Map<String, Value>],
    runtime_config: &Map<String, Value>,
) -> Vec<usize> {
    plugins
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            plugin_type(p) == "portmap" && !runtime_config.contains_key("portMappings")
        })
        .map(|(index, _)| index)
        .collect()
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether `path` is a network namespace file (nsfs): a bind mount that
/// was unmounted leaves a plain empty file behind, which no plugin can enter.
fn is_netns(path: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

fn validate_id(id: &str) -> Result<(), NetError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidRequest {
            field: "id",
            message: format!("{id:?} must be 1-128 letters, digits, '-', '_' or '.'"),
        })
    }
}

fn validate(req: &PodNetworkRequest) -> Result<(), NetError> {
    validate_id(&req.id)?;
    // CNI_ARGS is `K=V;K=V`: a value holding either separator would inject keys.
    for (field, value) in [
        ("name", &req.name),
        ("namespace", &req.namespace),
        ("uid", &req.uid),
    ] {
        if value.contains([';', '=']) {
            return Err(NetError::InvalidRequest {
                field,
                message: format!("{value:?} contains ';' or '='"),
            });
        }
    }
    if !req.netns_path.is_absolute() {
        return Err(NetError::InvalidRequest {
            field: "netns_path",
            message: format!("{} is not an absolute path", req.netns_path.display()),
        });
    }
    for m in &req.port_mappings {
        if m.host_port != 0 && m.container_port == 0 {
            return Err(NetError::InvalidRequest {
                field: "port_mappings",
                message: format!("host port {} maps to container port 0", m.host_port),
            });
        }
        if !m.host_ip.is_empty() && m.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(NetError::InvalidRequest {
                field: "port_mappings",
                message: format!("host IP {:?} is not an IP address", m.host_ip),
            });
        }
    }
    Ok(())
}

fn cni_args(req: &PodNetworkRequest) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        req.namespace, req.name, req.id, req.uid
    )
}

/// The capability arguments offered to plugins that declare them.
fn runtime_config(req: &PodNetworkRequest) -> Map<String, Value> {
    let mappings: Vec<Value> = req
        .port_mappings
        .iter()
        .filter(|m| m.host_port != 0)
        .map(|m| {
            let mut entry = serde_json::json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": m.protocol.as_str(),
            });
            if !m.host_ip.is_empty()
                && let Some(object) = entry.as_object_mut()
            {
                object.insert("hostIP".to_string(), Value::from(m.host_ip.clone()));
            }
            entry
        })
        .collect();
    let mut config = Map::new();
    if !mappings.is_empty() {
        config.insert("portMappings".to_string(), Value::Array(mappings));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::super::{PortMapping, Protocol};
    use super::*;

    fn request() -> PodNetworkRequest {
        PodNetworkRequest {
            id: "abc123".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            netns_path: "/run/netns/x".into(),
            port_mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 0,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: "127.0.0.1".into(),
                },
            ],
        }
    }

    #[test]
    fn cni_args_and_port_mappings() {
        let req = request();
        assert_eq!(
            cni_args(&req),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
        let rc = runtime_config(&req);
        assert_eq!(
            Value::Object(rc),
            serde_json::json!({"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
            ]})
        );
    }

    #[test]
    fn portmap_is_skipped_without_host_ports() {
        let plugins: Vec<Map<String, Value>> = [
            serde_json::json!({"type": "bridge"}),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ]
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .collect();
        assert_eq!(skipped_plugins(&plugins, &Map::new()), vec![1]);
        let with_ports = runtime_config(&request());
        assert_eq!(skipped_plugins(&plugins, &with_ports), Vec::<usize>::new());
    }

    #[test]
    fn bad_requests_are_rejected() {
        let mut req = request();
        req.id = "../x".into();
        assert!(matches!(
            validate(&req),
            Err(NetError::InvalidRequest { field: "id", .. })
        ));
        let mut req = request();
        req.name = "a;K8S_POD_UID=evil".into();
        assert!(matches!(
            validate(&req),
            Err(NetError::InvalidRequest { field: "name", .. })
        ));
        let mut req = request();
        req.netns_path = "relative".into();
        assert!(validate(&req).is_err());
        let mut req = request();
        req.port_mappings[0].host_ip = "nope".into();
        assert!(validate(&req).is_err());
        assert!(validate(&request()).is_ok());
    }
}
