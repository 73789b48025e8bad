//! Pod networking through CNI (spec 1.0.0).
//!
//! The pod module calls [`Service::setup`] once a pod's network namespace
//! exists (a bind-mounted ns file), [`Service::teardown`] when the pod stops,
//! and the `Status` RPC asks [`readiness`]. The network is the lexically first
//! config of `network.cni_conf_dir`, else yonggi's built-in bridge network
//! (`manifests/cni/yonggi-default.conflist`) on the node's pod CIDR.
//!
//! Every ADD is recorded in a cache (`cache.rs`) before it starts and with its
//! result when it ends; DEL runs from that record only, so it works after the
//! conf dir changed or the daemon restarted, and is a no-op once done.
//!
//! The caller's side of the contract:
//! - `setup` once the netns file exists; `teardown` *before* the netns is
//!   released: plugins find host-side state through the pod's interfaces
//!   (the bridge plugin's `ipMasq` rules), so a DEL without the netns can
//!   leave such state behind. Both are idempotent and serialised per id.
//! - A failed `setup` has undone its own work. One whose future was dropped
//!   (a cancelled RPC) leaves a cache entry: call `teardown` for that id.
//! - Host-network pods never call `setup`; `teardown` of them is a no-op.

mod cache;
mod conf;
pub mod host;
mod loopback;
pub mod masq;
mod plugin;
mod result;
mod service;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use host::HostConflict;
pub use service::Service;

/// The interface name inside the pod, as kubelet's runtimes use.
pub const POD_IFNAME: &str = "eth0";

/// What a pod's network attachment needs, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkRequest {
    /// The sandbox id: `CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID` and
    /// the cache key. Letters, digits, `-`, `_` and `.` only.
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pod's network namespace file (bind mount), passed as `CNI_NETNS`.
    pub netns_path: PathBuf,
    /// Host ports; mappings with `host_port == 0` are not host ports and are skipped.
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Empty: all host addresses.
    pub host_ip: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// The pod's side of the attachment, from the final CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// The CNI network's `name`.
    pub network: String,
    /// The interface inside the pod (`eth0`).
    pub interface: String,
    /// IPv4 addresses first, then IPv6, each in result order: the first is
    /// the pod's primary IP (`PodSandboxStatus.network.ip`), the rest go to
    /// `additional_ips`.
    pub ips: Vec<PodIp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIp {
    pub addr: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
}

/// The `NetworkReady` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    pub ready: bool,
    /// Empty when ready, else `NetworkPluginNotReady`.
    pub reason: String,
    pub message: String,
}

pub const NOT_READY_REASON: &str = "NetworkPluginNotReady";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid pod network request: {field}: {message}")]
    InvalidRequest {
        field: &'static str,
        message: String,
    },
    #[error("cannot read cni config {path}")]
    ConfRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid cni config {source_name}: {message}")]
    ConfInvalid {
        source_name: String,
        message: String,
    },
    #[error("cni plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("built-in pod network cannot be used on this host")]
    HostConflict(#[from] HostConflict),
    #[error("cannot run cni plugin {plugin} ({path})")]
    PluginExec {
        plugin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cni plugin {plugin} {command} did not finish within {seconds}s")]
    PluginTimeout {
        plugin: String,
        command: &'static str,
        seconds: u64,
    },
    #[error("cni plugin {plugin} {command} failed (code {code}): {msg}{}", details_suffix(.details))]
    PluginFailed {
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("cni plugin {plugin} {command} exited with {status}: {output}")]
    PluginCrashed {
        plugin: String,
        command: &'static str,
        status: String,
        output: String,
    },
    #[error("cni plugin {plugin} {command} gave an unusable result: {message}")]
    BadResult {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("cannot set up masquerading for pod CIDR {cidr}: {message}")]
    Masquerade { cidr: String, message: String },
    #[error("cannot bring lo up in {netns}")]
    Loopback {
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {id} has no network attachment")]
    NotAttached { id: String },
    #[error("cni cache {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cni cache entry {path} is unreadable: {message}")]
    CacheCorrupt { path: PathBuf, message: String },
}

/// The error and its causes, `a: b: c`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

impl NetError {
    /// The configuration or host is wrong (not the request, not a transient
    /// failure): the gRPC edge maps this to FailedPrecondition.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            NetError::ConfRead { .. }
                | NetError::ConfInvalid { .. }
                | NetError::PluginNotFound { .. }
                | NetError::HostConflict(_)
        )
    }
}

/// Whether pod networking can work now: a config is loadable and every
/// plugin it names (IPAM plugins included) is installed; for the built-in network,
/// also that its bridge name and subnet are free on this host. Cheap enough
/// for kubelet's periodic `Status` (a directory read and a few stats).
pub fn readiness(config: &crate::config::Config, pod_cidr: &str) -> NetworkStatus {
    let not_ready = |message: String| NetworkStatus {
        ready: false,
        reason: NOT_READY_REASON.to_string(),
        message,
    };
    let network = &config.network;
    let list = match conf::load(network, pod_cidr, &service::ipam_dir(config)) {
        Ok(list) => list,
        Err(e) => return not_ready(format!("yonggi: {}", chain(&e))),
    };
    let missing: Vec<&str> = list
        .required_plugins()
        .into_iter()
        .filter(|kind| conf::find_plugin(&network.cni_bin_dirs, kind).is_err())
        .collect();
    if !missing.is_empty() {
        let dirs: Vec<String> = network
            .cni_bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        return not_ready(format!(
            "yonggi: cni plugins {} needed by network {:?} ({}) are not in {}",
            missing.join(", "),
            list.name,
            list.source,
            dirs.join(", ")
        ));
    }
    if list.is_builtin()
        && let Err(e) = host::check(&network.bridge, pod_cidr)
    {
        return not_ready(format!(
            "yonggi: built-in network (bridge {}, pod CIDR {pod_cidr}): {e}",
            network.bridge
        ));
    }
    NetworkStatus {
        ready: true,
        reason: String::new(),
        message: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(conf_dir: &std::path::Path, bin_dirs: Vec<PathBuf>) -> Config {
        Config {
            root: conf_dir.join("root"),
            network: crate::config::NetworkConfig {
                cni_conf_dir: conf_dir.to_path_buf(),
                cni_bin_dirs: bin_dirs,
                ..Default::default()
            },
            ..Config::default()
        }
    }

    #[test]
    fn readiness_names_missing_plugins_and_bad_configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty_bins = vec![dir.path().join("no-bins")];
        let status = readiness(&config(dir.path(), empty_bins.clone()), "10.250.0.0/24");
        assert!(!status.ready);
        assert_eq!(status.reason, NOT_READY_REASON);
        for plugin in ["bridge", "host-local", "portmap"] {
            assert!(status.message.contains(plugin), "{}", status.message);
        }
        std::fs::write(dir.path().join("10-bad.conflist"), "{").expect("write");
        let status = readiness(&config(dir.path(), empty_bins), "10.250.0.0/24");
        assert!(!status.ready);
        assert!(
            status.message.contains("10-bad.conflist"),
            "{}",
            status.message
        );
    }

    #[test]
    fn readiness_with_installed_plugins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bins = tempfile::tempdir().expect("bins");
        for plugin in ["bridge", "portmap", "ptp", "host-local"] {
            use std::os::unix::fs::PermissionsExt;
            let path = bins.path().join(plugin);
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::write(
            dir.path().join("10-ptp.conf"),
            r#"{"cniVersion":"1.0.0","name":"p","type":"ptp"}"#,
        )
        .expect("write");
        let status = readiness(
            &config(dir.path(), vec![bins.path().into()]),
            "10.250.0.0/24",
        );
        assert!(status.ready, "{}", status.message);
        std::fs::write(
            dir.path().join("05-other.conf"),
            r#"{"cniVersion":"1.0.0","name":"o","type":"macvlan"}"#,
        )
        .expect("write");
        let status = readiness(
            &config(dir.path(), vec![bins.path().into()]),
            "10.250.0.0/24",
        );
        assert!(!status.ready);
        assert!(status.message.contains("macvlan"), "{}", status.message);
    }

    #[test]
    fn plugin_errors_name_the_plugin() {
        let err = NetError::PluginFailed {
            plugin: "bridge".into(),
            command: "ADD",
            code: 7,
            msg: "bad bridge".into(),
            details: "name too long".into(),
        };
        assert_eq!(
            err.to_string(),
            "cni plugin bridge ADD failed (code 7): bad bridge (name too long)"
        );
        assert!(!err.is_misconfiguration());
    }
}
