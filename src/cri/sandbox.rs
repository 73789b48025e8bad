//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
//! ListPodSandbox: CRI ⇄ `pod` domain types, and request validation.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_cri::v1 as cri;

use super::{Error, Services};
use crate::pod::{
    DnsConfig, Filter, Metadata, NamespaceModes, PidMode, PodSpec, PodState, PortMapping, Protocol,
    Sandbox,
};

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        message: message.into(),
    }
}

pub(super) async fn run(
    s: &Services,
    req: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse, Error> {
    let config = req.config.ok_or_else(|| invalid("config", "is missing"))?;
    let spec = pod_spec(config, req.runtime_handler)?;
    let id = s.pods.run(spec).await?;
    Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
}

pub(super) async fn stop(
    s: &Services,
    req: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse, Error> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "is empty"));
    }
    s.pods.stop(&req.pod_sandbox_id).await?;
    Ok(cri::StopPodSandboxResponse {})
}

pub(super) async fn remove(
    s: &Services,
    req: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse, Error> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "is empty"));
    }
    s.pods.remove(&req.pod_sandbox_id).await?;
    Ok(cri::RemovePodSandboxResponse {})
}

pub(super) fn status(
    s: &Services,
    req: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, Error> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "is empty"));
    }
    let pod = s.pods.get(&req.pod_sandbox_id)?;
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("info".to_string(), pod.verbose_info().to_string());
    }
    let mut ips = pod.ips.iter();
    let network = cri::PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
    };
    Ok(cri::PodSandboxStatusResponse {
        status: Some(cri::PodSandboxStatus {
            id: pod.id.clone(),
            metadata: Some(metadata(&pod)),
            state: state(pod.state).into(),
            created_at: pod.created_at,
            network: Some(network),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(namespace_options(pod.spec.namespaces)),
                }),
            }),
            labels: to_hash(&pod.spec.labels),
            annotations: to_hash(&pod.spec.annotations),
            runtime_handler: pod.spec.runtime_handler.clone(),
        }),
        info,
        containers_statuses: Vec::new(),
        timestamp: now_ns(),
    })
}

pub(super) fn list(
    s: &Services,
    req: cri::ListPodSandboxRequest,
) -> Result<cri::ListPodSandboxResponse, Error> {
    let filter = match req.filter {
        None => Filter::default(),
        Some(f) => Filter {
            id: (!f.id.is_empty()).then_some(f.id),
            state: match f.state {
                None => None,
                Some(v) => Some(match cri::PodSandboxState::try_from(v.state) {
                    Ok(cri::PodSandboxState::SandboxReady) => PodState::Ready,
                    Ok(cri::PodSandboxState::SandboxNotready) => PodState::NotReady,
                    Err(_) => {
                        return Err(invalid(
                            "filter.state",
                            format!("unknown state {}", v.state),
                        ));
                    }
                }),
            },
            labels: f.label_selector.into_iter().collect(),
        },
    };
    let items = s
        .pods
        .list(&filter)?
        .iter()
        .map(|pod| cri::PodSandbox {
            id: pod.id.clone(),
            metadata: Some(metadata(pod)),
            state: state(pod.state).into(),
            created_at: pod.created_at,
            labels: to_hash(&pod.spec.labels),
            annotations: to_hash(&pod.spec.annotations),
            runtime_handler: pod.spec.runtime_handler.clone(),
        })
        .collect();
    Ok(cri::ListPodSandboxResponse { items })
}

fn pod_spec(config: cri::PodSandboxConfig, runtime_handler: String) -> Result<PodSpec, Error> {
    let meta = config
        .metadata
        .ok_or_else(|| invalid("config.metadata", "is missing"))?;
    if meta.name.is_empty() {
        return Err(invalid("config.metadata.name", "is empty"));
    }
    // The kernel's limit (HOST_NAME_MAX); longer would fail deep in set-up.
    if config.hostname.len() > 64 {
        return Err(invalid(
            "config.hostname",
            format!("{:?} is longer than 64 bytes", config.hostname),
        ));
    }
    let linux = config.linux.unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    let namespaces = namespace_modes(security.namespace_options.unwrap_or_default())?;
    let port_mappings = config
        .port_mappings
        .iter()
        .map(port_mapping)
        .collect::<Result<_, _>>()?;
    Ok(PodSpec {
        metadata: Metadata {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            attempt: meta.attempt,
        },
        hostname: config.hostname,
        log_directory: config.log_directory,
        dns: config.dns_config.map(|d| DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings,
        labels: config.labels.into_iter().collect(),
        annotations: config.annotations.into_iter().collect(),
        cgroup_parent: linux.cgroup_parent,
        namespaces,
        sysctls: linux.sysctls.into_iter().collect(),
        runtime_handler,
        privileged: security.privileged,
    })
}

fn namespace_modes(opts: cri::NamespaceOption) -> Result<NamespaceModes, Error> {
    use cri::NamespaceMode as M;
    let mode = |field: &'static str, raw: i32| {
        M::try_from(raw).map_err(|_| invalid(field, format!("unknown namespace mode {raw}")))
    };
    // A sandbox has no container to target; CONTAINER for the network or IPC
    // namespace of a sandbox means its own, as POD does.
    let host_network = match mode("namespace_options.network", opts.network)? {
        M::Node => true,
        M::Pod | M::Container => false,
        M::Target => {
            return Err(invalid(
                "namespace_options.network",
                "TARGET is not valid for a pod sandbox",
            ));
        }
    };
    let host_ipc = match mode("namespace_options.ipc", opts.ipc)? {
        M::Node => true,
        M::Pod | M::Container => false,
        M::Target => {
            return Err(invalid(
                "namespace_options.ipc",
                "TARGET is not valid for a pod sandbox",
            ));
        }
    };
    let pid = match mode("namespace_options.pid", opts.pid)? {
        M::Pod => PidMode::Pod,
        M::Container => PidMode::Container,
        M::Node => PidMode::Node,
        M::Target => {
            return Err(invalid(
                "namespace_options.pid",
                "TARGET is not valid for a pod sandbox",
            ));
        }
    };
    if let Some(userns) = opts.userns_options
        && mode("namespace_options.userns_options.mode", userns.mode)? != M::Node
    {
        return Err(invalid(
            "namespace_options.userns_options",
            "user namespaces are not supported by yonggi yet (only mode NODE)",
        ));
    }
    Ok(NamespaceModes {
        host_network,
        host_ipc,
        pid,
    })
}

fn port_mapping(p: &cri::PortMapping) -> Result<PortMapping, Error> {
    let protocol = match cri::Protocol::try_from(p.protocol) {
        Ok(cri::Protocol::Tcp) => Protocol::Tcp,
        Ok(cri::Protocol::Udp) => Protocol::Udp,
        Ok(cri::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => {
            return Err(invalid(
                "port_mappings.protocol",
                format!("unknown protocol {}", p.protocol),
            ));
        }
    };
    let container_port = u16::try_from(p.container_port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            invalid(
                "port_mappings.container_port",
                format!("{} is not a port", p.container_port),
            )
        })?;
    let host_port = u16::try_from(p.host_port).map_err(|_| {
        invalid(
            "port_mappings.host_port",
            format!("{} is not a port", p.host_port),
        )
    })?;
    if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(
            "port_mappings.host_ip",
            format!("{:?} is not an IP address", p.host_ip),
        ));
    }
    Ok(PortMapping {
        protocol,
        container_port,
        host_port,
        host_ip: p.host_ip.clone(),
    })
}

fn namespace_options(modes: NamespaceModes) -> cri::NamespaceOption {
    use cri::NamespaceMode as M;
    let pod_or_node = |host: bool| if host { M::Node } else { M::Pod };
    cri::NamespaceOption {
        network: pod_or_node(modes.host_network).into(),
        ipc: pod_or_node(modes.host_ipc).into(),
        pid: match modes.pid {
            PidMode::Pod => M::Pod,
            PidMode::Container => M::Container,
            PidMode::Node => M::Node,
        }
        .into(),
        target_id: String::new(),
        userns_options: None,
    }
}

fn metadata(pod: &Sandbox) -> cri::PodSandboxMetadata {
    let m = &pod.spec.metadata;
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

fn state(state: PodState) -> cri::PodSandboxState {
    match state {
        PodState::Ready => cri::PodSandboxState::SandboxReady,
        PodState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

fn to_hash(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(network: i32, pid: i32, ipc: i32) -> cri::NamespaceOption {
        cri::NamespaceOption {
            network,
            pid,
            ipc,
            ..Default::default()
        }
    }

    #[test]
    fn namespace_modes_round_trip() {
        use cri::NamespaceMode as M;
        let modes =
            namespace_modes(options(M::Node.into(), M::Pod.into(), M::Pod.into())).expect("valid");
        assert!(modes.host_network && !modes.host_ipc);
        assert_eq!(modes.pid, PidMode::Pod);
        let back = namespace_options(modes);
        assert_eq!(back.network(), M::Node);
        assert_eq!(back.pid(), M::Pod);
        assert_eq!(back.ipc(), M::Pod);
        // The all-zero default (critest's nil options) is POD for all three.
        let default = namespace_modes(cri::NamespaceOption::default()).expect("default");
        assert!(!default.host_network && !default.host_ipc);
        assert_eq!(default.pid, PidMode::Pod);
    }

    #[test]
    fn bad_namespace_options_are_invalid() {
        use cri::NamespaceMode as M;
        for opts in [
            options(M::Target.into(), 0, 0),
            options(0, M::Target.into(), 0),
            options(0, 0, 42),
            cri::NamespaceOption {
                userns_options: Some(cri::UserNamespace {
                    mode: M::Pod.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ] {
            let err = namespace_modes(opts.clone()).expect_err("invalid");
            assert!(matches!(err, Error::InvalidArgument { .. }), "{opts:?}");
        }
    }

    #[test]
    fn port_mappings_are_checked() {
        let ok = port_mapping(&cri::PortMapping {
            protocol: cri::Protocol::Udp.into(),
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into(),
        })
        .expect("valid");
        assert_eq!(
            (ok.protocol, ok.container_port, ok.host_port),
            (Protocol::Udp, 53, 5353)
        );
        for bad in [
            cri::PortMapping {
                container_port: 0,
                ..Default::default()
            },
            cri::PortMapping {
                container_port: 80,
                host_port: 70000,
                ..Default::default()
            },
            cri::PortMapping {
                container_port: 80,
                host_ip: "localhost".into(),
                ..Default::default()
            },
        ] {
            assert!(port_mapping(&bad).is_err(), "{bad:?}");
        }
    }
}
