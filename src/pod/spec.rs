//! What a pod is asked to be, in domain terms (the CRI layer fills it in),
//! and the checks that need no system access: namespace modes and sysctls.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::PodError;

/// The pod's identity as kubelet names it; unique among live pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

impl Metadata {
    /// The reservation key: one live pod per name, namespace, uid and attempt.
    pub fn reservation_key(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.name, self.namespace, self.uid, self.attempt
        )
    }
}

/// Which PID namespace the pod's containers get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PidMode {
    /// One namespace for the whole pod, held by a `pod-init` process.
    Pod,
    /// Each container its own (the default).
    Container,
    /// The host's.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceModes {
    pub host_network: bool,
    pub host_ipc: bool,
    pub pid: PidMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    /// 0: no host port.
    pub host_port: u16,
    /// Empty: all host addresses.
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Everything RunPodSandbox asked for, stored as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub metadata: Metadata,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_parent: String,
    pub namespaces: NamespaceModes,
    pub sysctls: BTreeMap<String, String>,
    /// "" is the default handler.
    pub runtime_handler: String,
    pub privileged: bool,
    /// The pod's user namespace mappings; `None`: the node's namespace.
    #[serde(default)]
    pub userns: Option<crate::security::userns::Mappings>,
}

/// Which of the pod's namespaces a sysctl lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNs {
    Net,
    Ipc,
    Uts,
}

/// A sysctl checked against the pod's namespaces, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSysctl {
    pub name: String,
    /// Relative to `/proc/sys`.
    pub path: PathBuf,
    pub value: String,
    pub ns: SysctlNs,
}

/// The IPC namespace's sysctls (ipc/ipc_sysctl.c and ipc/mq_sysctl.c).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.shmmax",
    "kernel.shmall",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.msgmax",
    "kernel.msgmni",
    "kernel.msgmnb",
    "kernel.msg_next_id",
    "kernel.sem",
    "kernel.sem_next_id",
    "kernel.shm_next_id",
];

/// The dotted form of a sysctl name. Kubernetes also accepts `/` as the
/// separator; then dots are part of a component (an interface like `eth0.100`),
/// so the two characters swap.
fn dotted(name: &str) -> String {
    if name.contains('/') {
        name.chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect()
    } else {
        name.to_string()
    }
}

/// The path under `/proc/sys` of a sysctl name in either form.
fn proc_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from(name.replace('.', "/"))
    }
}

/// Sorts each sysctl into the namespace it belongs to, and refuses those that
/// are not namespaced (they would change the node) or whose namespace the pod
/// shares with the host.
pub fn check_sysctls(
    sysctls: &BTreeMap<String, String>,
    modes: NamespaceModes,
) -> Result<Vec<CheckedSysctl>, PodError> {
    let mut out = Vec::new();
    for (name, value) in sysctls {
        let invalid = |reason: &str| PodError::InvalidSysctl {
            name: name.clone(),
            reason: reason.to_string(),
        };
        let path = proc_path(name);
        let separator = if name.contains('/') { '/' } else { '.' };
        let sane = name.split(separator).all(|part| !part.is_empty())
            && path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !sane {
            return Err(invalid("not a sysctl name"));
        }
        if value.contains('\n') {
            return Err(invalid("the value contains a newline"));
        }
        let key = dotted(name);
        let ns = if key.starts_with("net.") {
            SysctlNs::Net
        } else if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            SysctlNs::Ipc
        } else if key == "kernel.domainname" {
            SysctlNs::Uts
        } else {
            return Err(invalid(
                "it is not namespaced, so setting it would change the whole node",
            ));
        };
        match ns {
            SysctlNs::Net | SysctlNs::Uts if modes.host_network => {
                return Err(invalid(
                    "the pod uses the host network, so it would change the node",
                ));
            }
            SysctlNs::Ipc if modes.host_ipc => {
                return Err(invalid("the pod uses the host IPC namespace"));
            }
            _ => {}
        }
        out.push(CheckedSysctl {
            name: name.clone(),
            path,
            value: value.clone(),
            ns,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: NamespaceModes = NamespaceModes {
        host_network: false,
        host_ipc: false,
        pid: PidMode::Container,
    };

    fn one(name: &str, modes: NamespaceModes) -> Result<Vec<CheckedSysctl>, PodError> {
        check_sysctls(
            &BTreeMap::from([(name.to_string(), "1".to_string())]),
            modes,
        )
    }

    #[test]
    fn namespaced_sysctls_are_sorted() {
        let ok = one("kernel.shm_rmid_forced", POD).expect("ipc sysctl");
        assert_eq!(ok[0].ns, SysctlNs::Ipc);
        assert_eq!(ok[0].path, PathBuf::from("kernel/shm_rmid_forced"));
        assert_eq!(
            one("fs.mqueue.msg_max", POD).expect("mqueue")[0].ns,
            SysctlNs::Ipc
        );
        let net = one("net.ipv4.ip_unprivileged_port_start", POD).expect("net");
        assert_eq!(net[0].ns, SysctlNs::Net);
        let slashed = one("net/ipv4/conf/eth0.100/rp_filter", POD).expect("slash form");
        assert_eq!(
            slashed[0].path,
            PathBuf::from("net/ipv4/conf/eth0.100/rp_filter")
        );
    }

    #[test]
    fn node_wide_and_host_shared_sysctls_are_refused() {
        for name in ["kernel.panic", "vm.swappiness", "kernel.pid_max"] {
            let err = one(name, POD).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
        let host_net = NamespaceModes {
            host_network: true,
            ..POD
        };
        assert!(one("net.ipv4.ip_forward", host_net).is_err());
        assert!(one("kernel.shm_rmid_forced", host_net).is_ok());
        let host_ipc = NamespaceModes {
            host_ipc: true,
            ..POD
        };
        assert!(one("kernel.msgmax", host_ipc).is_err());
        for bad in ["", "../etc/passwd", "net..x", "/proc/sys/net"] {
            assert!(one(bad, POD).is_err(), "{bad:?}");
        }
    }
}
