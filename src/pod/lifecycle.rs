//! RunPodSandbox.
//!
//! Run checks the request, reserves the pod's name, then sets up, in order:
//! the state directory and its files, the namespaces (configured from
//! inside: hostname, loopback, sysctls), the pod's `/dev/shm`, the sandbox
//! cgroup, the PID-namespace holder, the network (CNI ADD, then `/etc/hosts`
//! with the pod IPs); only then is the record written. Any failure undoes
//! what was done, in reverse (see `teardown.rs`), and releases the name, so a
//! failed run leaves nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::files;
use super::sandbox::{cgroup_file, holder_pid_file, ns_dir, own_namespaces};
use super::spec::{CheckedSysctl, PidMode, PodSpec, Protocol, SysctlNs, check_sysctls};
use super::{Holder, PodError, PodState, Sandbox, Service};
use crate::net::PodNetworkRequest;
use crate::runtime::cgroup::CgroupPath;
use crate::runtime::namespace::{self, NsKind, NsRequest, Sysctl, ns_file, ns_inode};
use crate::runtime::userns::{self, IdMap, UsernsRequest};
use crate::runtime::{mount, pid_holder};
use crate::security::userns::IdMapping;
use crate::state::Bucket;

/// Size of a pod's `/dev/shm`, as other runtimes default it.
const SHM_SIZE: u64 = 64 * 1024 * 1024;

impl Service {
    /// Creates a pod and returns its id once its record is durable. The work
    /// runs in its own task: a caller that gives up (deadline) does not leave
    /// a half-made pod, and kubelet's retry meets the reservation by name.
    pub async fn run(self: &Arc<Self>, spec: PodSpec) -> Result<String, PodError> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run_inner(spec).await })
            .await
            .map_err(PodError::Task)?
    }

    async fn run_inner(self: Arc<Self>, spec: PodSpec) -> Result<String, PodError> {
        if !spec.runtime_handler.is_empty()
            && !self
                .config
                .runtime_handlers
                .contains_key(&spec.runtime_handler)
        {
            return Err(PodError::UnknownHandler(spec.runtime_handler.clone()));
        }
        let sysctls = check_sysctls(&spec.sysctls, spec.namespaces)?;
        let id = hex::encode(rand::random::<[u8; 32]>());
        let cgroup = self.sandbox_cgroup(&spec, &id)?;
        let key = spec.metadata.reservation_key();
        {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(holder) = names.get(&key) {
                return Err(PodError::NameReserved {
                    name: key,
                    id: holder.clone(),
                });
            }
            names.insert(key.clone(), id.clone());
        }
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let pod = Sandbox {
            dir: self.pods_dir().join(&id),
            id: id.clone(),
            spec,
            state: PodState::Ready,
            created_at,
            ips: Vec::new(),
            holder: None,
            cgroup: None,
        };
        if let Err(e) = self.build(pod, sysctls, cgroup).await {
            self.release_name(&key, &id);
            return Err(e);
        }
        tracing::info!(pod = %id, name = %key, "pod sandbox ready");
        Ok(id)
    }

    /// The sandbox's own cgroup under kubelet's cgroup parent, named like
    /// a container's (a leaf: on cgroup v2 the parent then holds no process).
    fn sandbox_cgroup(&self, spec: &PodSpec, id: &str) -> Result<Option<CgroupPath>, PodError> {
        if spec.cgroup_parent.is_empty() {
            return Ok(None);
        }
        let parent = self
            .driver
            .pod_cgroup(&spec.cgroup_parent)
            .map_err(PodError::Cgroup)?;
        self.driver
            .container_cgroup(&parent, id)
            .map(Some)
            .map_err(PodError::Cgroup)
    }

    /// Sets the pod up and stores it; on error everything is undone.
    async fn build(
        self: &Arc<Self>,
        pod: Sandbox,
        sysctls: Vec<CheckedSysctl>,
        cgroup: Option<CgroupPath>,
    ) -> Result<(), PodError> {
        let this = Arc::clone(self);
        let mut pod = tokio::task::spawn_blocking(move || this.set_up(pod, &sysctls, cgroup))
            .await
            .map_err(PodError::Task)??;
        let attached = self.attach_network(&mut pod).await;
        let stored = attached.and_then(|()| Ok(self.store.put(Bucket::Pods, &pod.id, &pod)?));
        if let Err(e) = stored {
            self.undo(pod).await;
            return Err(e);
        }
        Ok(())
    }

    /// CNI ADD for a pod with its own network namespace, then `/etc/hosts`
    /// naming the pod by its IPs.
    async fn attach_network(&self, pod: &mut Sandbox) -> Result<(), PodError> {
        let Some(netns_path) = pod.netns_path() else {
            return Ok(());
        };
        let meta = &pod.spec.metadata;
        let request = PodNetworkRequest {
            id: pod.id.clone(),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            netns_path,
            port_mappings: pod
                .spec
                .port_mappings
                .iter()
                .map(|p| crate::net::PortMapping {
                    host_port: p.host_port,
                    container_port: p.container_port,
                    protocol: match p.protocol {
                        Protocol::Tcp => crate::net::Protocol::Tcp,
                        Protocol::Udp => crate::net::Protocol::Udp,
                        Protocol::Sctp => crate::net::Protocol::Sctp,
                    },
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
        };
        let network = self.net.setup(&request).await.map_err(PodError::Network)?;
        pod.ips = network.ips.iter().map(|ip| ip.addr.to_string()).collect();
        let hosts = files::hosts(&pod.spec.hostname, &pod.ips);
        let path = pod.hosts_path();
        files::write_atomic(&path, hosts.as_bytes()).map_err(|source| PodError::Io {
            action: "write",
            path,
            source,
        })
    }

    /// Undoes a run that failed after its set-up: network, then the rest.
    async fn undo(self: &Arc<Self>, pod: Sandbox) {
        if pod.netns_path().is_some()
            && let Err(e) = self.net.teardown(&pod.id).await
        {
            tracing::warn!(pod = %pod.id, error = %crate::cri::chain(&e), "rollback of a failed run: cni del failed");
        }
        let this = Arc::clone(self);
        let id = pod.id.clone();
        let undone = tokio::task::spawn_blocking(move || this.destroy(&pod))
            .await
            .map_err(PodError::Task)
            .and_then(|r| r);
        if let Err(e) = undone {
            tracing::warn!(pod = %id, error = %crate::cri::chain(&e), "rollback of a failed run was incomplete");
        }
    }

    /// Builds the pod's local resources; on error undoes its own steps.
    fn set_up(
        &self,
        mut pod: Sandbox,
        sysctls: &[CheckedSysctl],
        cgroup: Option<CgroupPath>,
    ) -> Result<Sandbox, PodError> {
        match self.try_set_up(&mut pod, sysctls, cgroup) {
            Ok(()) => Ok(pod),
            Err(e) => {
                if let Err(undo) = self.destroy(&pod) {
                    tracing::warn!(pod = %pod.id, error = %crate::cri::chain(&undo), "rollback of a failed run was incomplete");
                }
                Err(e)
            }
        }
    }

    fn try_set_up(
        &self,
        pod: &mut Sandbox,
        sysctls: &[CheckedSysctl],
        cgroup: Option<CgroupPath>,
    ) -> Result<(), PodError> {
        let spec = pod.spec.clone();
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| PodError::Io {
                action,
                path,
                source,
            }
        };
        let ns = ns_dir(&pod.dir);
        std::fs::create_dir_all(&ns).map_err(io("create", &ns))?;

        let hostname = if spec.namespaces.host_network {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            spec.hostname.clone()
        };
        let write = |path: std::path::PathBuf, content: &[u8]| {
            files::write_atomic(&path, content).map_err(io("write", &path))
        };
        write(pod.hostname_path(), format!("{hostname}\n").as_bytes())?;
        let resolv = files::resolv_conf(spec.dns.as_ref())
            .map(String::into_bytes)
            .unwrap_or_else(|| files::host_file(files::HOST_RESOLV_CONF));
        write(pod.resolv_conf_path(), &resolv)?;
        let hosts = if spec.namespaces.host_network {
            files::host_file(files::HOST_HOSTS)
        } else {
            files::hosts(&hostname, &pod.ips).into_bytes()
        };
        write(pod.hosts_path(), &hosts)?;

        let kinds = own_namespaces(&spec);
        if !kinds.is_empty() {
            let request = NsRequest {
                dir: ns.clone(),
                hostname: (!spec.namespaces.host_network && !spec.hostname.is_empty())
                    .then(|| spec.hostname.clone()),
                kinds,
                sysctls: sysctls
                    .iter()
                    .map(|s| Sysctl {
                        name: s.name.clone(),
                        path: s.path.clone(),
                        value: s.value.clone(),
                        ipc: s.ns == SysctlNs::Ipc,
                    })
                    .collect(),
            };
            match &spec.userns {
                None => namespace::create(request)?,
                Some(m) => {
                    let map = |m: IdMapping| IdMap {
                        container_id: m.container_id,
                        host_id: m.host_id,
                        size: m.length,
                    };
                    userns::create(&UsernsRequest {
                        dir: ns.clone(),
                        uid: map(m.uid),
                        gid: map(m.gid),
                        kinds: request.kinds.clone(),
                    })?;
                    namespace::configure_existing(request, (m.uid.host_id, m.gid.host_id))?;
                }
            }
        }

        if let Some(shm) = pod.shm_path() {
            mount::mount_shm(&shm, SHM_SIZE).map_err(PodError::Mount)?;
        }

        if let Some(path) = cgroup {
            let cg = self.cgroups.create(&path).map_err(PodError::Cgroup)?;
            pod.cgroup = Some(cg.clone());
            // Recorded in the directory too: remains of a crashed run name it.
            let file = cgroup_file(&pod.dir);
            let json = serde_json::to_vec(&cg).unwrap_or_default();
            std::fs::write(&file, json).map_err(io("write", &file))?;
        }

        if spec.namespaces.pid == PidMode::Pod {
            let args = pid_holder::HolderArgs {
                net: pod.netns_path(),
                ipc: pod.ipc_ns_path(),
                uts: pod.uts_ns_path(),
            };
            let pid = pid_holder::spawn(&args).map_err(PodError::Holder)?;
            self.children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pid);
            // Recorded before anything else can fail, so rollback kills it.
            let pid_file = holder_pid_file(&pod.dir);
            let written = std::fs::write(&pid_file, format!("{pid}\n"));
            let bound = namespace::bind_process_ns(pid, &ns, NsKind::Pid);
            let inode = ns_inode(&ns_file(&ns, NsKind::Pid));
            let joined = match &pod.cgroup {
                Some(cg) => self.cgroups.add_process(cg, pid).map_err(PodError::Cgroup),
                None => Ok(()),
            };
            match (written, bound, inode, joined) {
                (Ok(()), Ok(_), Some(pidns_inode), Ok(())) => {
                    pod.holder = Some(Holder { pid, pidns_inode });
                }
                (written, bound, _, joined) => {
                    let ours = self.take_child(pid);
                    let inode = ns_inode(Path::new(&format!("/proc/{pid}/ns/pid")));
                    if let Some(inode) = inode {
                        let _ = pid_holder::kill(pid, inode, ours);
                    }
                    written.map_err(io("write", &pid_file))?;
                    bound?;
                    joined?;
                    return Err(PodError::Io {
                        action: "stat",
                        path: ns_file(&ns, NsKind::Pid),
                        source: std::io::Error::other("namespace file vanished"),
                    });
                }
            }
        }
        Ok(())
    }
}
