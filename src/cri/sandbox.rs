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
    // The pod's containers go first: they live in its namespaces.
    if let Ok(id) = s.pods.resolve(&req.pod_sandbox_id) {
        s.containers.stop_pod(&id).await?;
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
    if let Ok(id) = s.pods.resolve(&req.pod_sandbox_id) {
        for c in s.containers.remove_pod(&id).await? {
            super::container_image::release(s, &c).await?;
        }
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
                    options: Some(namespace_options(
                        pod.spec.namespaces,
                        pod.spec.userns.as_ref(),
                    )),
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
    let namespace_options = security.namespace_options.unwrap_or_default();
    let userns = pod_userns(namespace_options.userns_options.as_ref())?;
    let namespaces = namespace_modes(namespace_options)?;
    if userns.is_some()
        && (namespaces.host_network || namespaces.host_ipc || namespaces.pid == PidMode::Node)
    {
        return Err(invalid(
            "namespace_options.userns_options",
            "a pod in a user namespace cannot share the node's network, IPC or PID namespace",
        ));
    }
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
        userns,
    })
}

/// The pod's user namespace: mode NODE (or none) is none; POD takes the
/// one uid and one gid mapping kubelet allocated; the rest is refused.
fn pod_userns(
    opts: Option<&cri::UserNamespace>,
) -> Result<Option<crate::security::userns::Mappings>, Error> {
    use crate::security::userns::{UsernsRequest, mappings};
    let Some(opts) = opts else {
        return Ok(None);
    };
    let mode = super::security::userns_mode("namespace_options.userns_options.mode", opts.mode)?;
    let (uids, gids) = (
        super::security::id_mappings(&opts.uids),
        super::security::id_mappings(&opts.gids),
    );
    Ok(mappings(&UsernsRequest {
        mode,
        uids: &uids,
        gids: &gids,
    })?)
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

fn namespace_options(
    modes: NamespaceModes,
    userns: Option<&crate::security::userns::Mappings>,
) -> cri::NamespaceOption {
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
        userns_options: userns.map(|m| {
            let mapping = |m: crate::security::userns::IdMapping| cri::IdMapping {
                host_id: m.host_id,
                container_id: m.container_id,
                length: m.length,
            };
            cri::UserNamespace {
                mode: M::Pod.into(),
                uids: vec![mapping(m.uid)],
                gids: vec![mapping(m.gid)],
            }
        }),
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
        let back = namespace_options(modes, None);
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
        ] {
            let err = namespace_modes(opts.clone()).expect_err("invalid");
            assert!(matches!(err, Error::InvalidArgument { .. }), "{opts:?}");
        }
    }

    #[test]
    fn pod_user_namespaces_are_checked() {
        use cri::NamespaceMode as M;
        let range = |host_id, container_id| cri::IdMapping {
            host_id,
            container_id,
            length: 65536,
        };
        let userns =
            |mode: M, uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>| cri::UserNamespace {
                mode: mode.into(),
                uids,
                gids,
            };
        assert_eq!(pod_userns(None).expect("none"), None);
        let node = userns(M::Node, vec![], vec![]);
        assert_eq!(pod_userns(Some(&node)).expect("node"), None);
        let pod = userns(M::Pod, vec![range(100_000, 0)], vec![range(100_000, 0)]);
        let m = pod_userns(Some(&pod)).expect("pod").expect("mappings");
        assert_eq!((m.uid.host_id, m.gid.length), (100_000, 65536));
        let back = namespace_options(
            namespace_modes(cri::NamespaceOption::default()).expect("modes"),
            Some(&m),
        );
        assert_eq!(back.userns_options, Some(pod));
        for bad in [
            userns(M::Pod, vec![], vec![range(100_000, 0)]),
            userns(
                M::Pod,
                vec![range(100_000, 0), range(200_000, 65536)],
                vec![range(100_000, 0)],
            ),
            userns(M::Pod, vec![range(100_000, 1)], vec![range(100_000, 1)]),
            userns(M::Container, vec![range(1, 0)], vec![range(1, 0)]),
            userns(M::Target, vec![], vec![]),
        ] {
            let err = pod_userns(Some(&bad)).expect_err("invalid");
            assert_eq!(
                tonic::Status::from(err).code(),
                tonic::Code::InvalidArgument,
                "{bad:?}"
            );
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
