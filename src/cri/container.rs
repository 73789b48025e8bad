//! The container RPCs: CRI ⇄ `container` domain types, and validation.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_cri::v1 as cri;

use super::{Error, Services};
use crate::container::{
    Container, ContainerResources, ContainerSpec, DeviceRequest, Filter, Metadata, Propagation,
    State, VolumeMount,
};

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        message: message.into(),
    }
}

fn need_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(invalid("container_id", "is empty"));
    }
    Ok(())
}

pub(super) async fn create(
    s: &Services,
    req: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse, Error> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "is empty"));
    }
    let config = req.config.ok_or_else(|| invalid("config", "is missing"))?;
    let reference = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid("config.image", "is missing"))?;
    let user_specified = config
        .image
        .as_ref()
        .map(|i| i.user_specified_image.clone())
        .unwrap_or_default();
    let spec = container_spec(config)?;
    let (mut image, record) = super::container_image::resolve(s, &reference)?;
    image.user_specified = user_specified;
    let id = s
        .containers
        .create(&req.pod_sandbox_id, spec, image)
        .await?;
    if let Err(e) = s.images.lease(&id, &record) {
        // Nothing may stay of a failed create.
        s.containers.remove(&id).await?;
        return Err(e.into());
    }
    Ok(cri::CreateContainerResponse { container_id: id })
}

fn container_spec(c: cri::ContainerConfig) -> Result<ContainerSpec, Error> {
    let meta = c
        .metadata
        .ok_or_else(|| invalid("config.metadata", "is missing"))?;
    if meta.name.is_empty() {
        return Err(invalid("config.metadata.name", "is empty"));
    }
    let mut mounts = Vec::new();
    for m in c.mounts {
        if m.host_path.is_empty() || m.container_path.is_empty() {
            return Err(invalid(
                "mounts",
                "host_path and container_path are required",
            ));
        }
        let propagation = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationPrivate) => Propagation::Private,
            Ok(cri::MountPropagation::PropagationHostToContainer) => Propagation::HostToContainer,
            Ok(cri::MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
            Err(_) => return Err(invalid("mounts.propagation", m.propagation.to_string())),
        };
        mounts.push(VolumeMount {
            container_path: m.container_path,
            host_path: m.host_path.into(),
            readonly: m.readonly,
            recursive_read_only: m.recursive_read_only,
            propagation,
        });
    }
    let mut devices = Vec::new();
    for d in c.devices {
        if d.host_path.is_empty() || d.container_path.is_empty() {
            return Err(invalid(
                "devices",
                "host_path and container_path are required",
            ));
        }
        devices.push(DeviceRequest {
            container_path: d.container_path,
            host_path: d.host_path.into(),
            permissions: d.permissions,
        });
    }
    let linux = c.linux.unwrap_or_default();
    let security = super::security::translate(linux.security_context.as_ref())?;
    Ok(ContainerSpec {
        metadata: Metadata {
            name: meta.name,
            attempt: meta.attempt,
        },
        image: c.image.map(|i| i.image).unwrap_or_default(),
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        envs: c.envs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        mounts,
        devices,
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        log_path: c.log_path,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        resources: linux.resources.map(resources).unwrap_or_default(),
        security,
        userns: container_userns(
            linux
                .security_context
                .as_ref()
                .and_then(|sc| sc.namespace_options.as_ref()),
        )?,
    })
}

/// The container's `userns_options` as asked (checked against its pod's
/// by the container service); absent: none asked.
fn container_userns(
    opts: Option<&cri::NamespaceOption>,
) -> Result<Option<crate::security::userns::ContainerUserns>, Error> {
    use crate::security::userns::{ContainerUserns, UsernsRequest};
    let Some(u) = opts.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(None);
    };
    let mode = super::security::userns_mode("userns_options.mode", u.mode)?;
    let (uids, gids) = (
        super::security::id_mappings(&u.uids),
        super::security::id_mappings(&u.gids),
    );
    Ok(Some(ContainerUserns::from_request(&UsernsRequest {
        mode,
        uids: &uids,
        gids: &gids,
    })?))
}

fn positive<T: TryFrom<i64>>(v: i64) -> Option<T> {
    (v > 0).then(|| T::try_from(v).ok()).flatten()
}

fn resources(r: cri::LinuxContainerResources) -> ContainerResources {
    ContainerResources {
        cpu_period: positive(r.cpu_period),
        cpu_quota: (r.cpu_quota != 0).then_some(r.cpu_quota),
        cpu_shares: positive(r.cpu_shares),
        memory_limit: positive(r.memory_limit_in_bytes),
        memory_swap_limit: positive(r.memory_swap_limit_in_bytes),
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: (!r.cpuset_cpus.is_empty()).then_some(r.cpuset_cpus),
        cpuset_mems: (!r.cpuset_mems.is_empty()).then_some(r.cpuset_mems),
        hugepages: r
            .hugepage_limits
            .into_iter()
            .map(|h| (h.page_size, h.limit))
            .collect(),
        unified: r.unified.into_iter().collect(),
    }
}

fn to_cri_resources(r: &ContainerResources) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: r
            .cpu_period
            .and_then(|v| i64::try_from(v).ok())
            .unwrap_or(0),
        cpu_quota: r.cpu_quota.unwrap_or(0),
        cpu_shares: r
            .cpu_shares
            .and_then(|v| i64::try_from(v).ok())
            .unwrap_or(0),
        memory_limit_in_bytes: r.memory_limit.unwrap_or(0),
        memory_swap_limit_in_bytes: r.memory_swap_limit.unwrap_or(0),
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: r.cpuset_mems.clone().unwrap_or_default(),
        hugepage_limits: r
            .hugepages
            .iter()
            .map(|(p, l)| cri::HugepageLimit {
                page_size: p.clone(),
                limit: *l,
            })
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
    }
}

pub(super) async fn start(
    s: &Services,
    req: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse, Error> {
    need_id(&req.container_id)?;
    s.containers.start(&req.container_id).await?;
    Ok(cri::StartContainerResponse {})
}

pub(super) async fn stop(
    s: &Services,
    req: cri::StopContainerRequest,
) -> Result<cri::StopContainerResponse, Error> {
    need_id(&req.container_id)?;
    let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
    s.containers.stop(&req.container_id, timeout).await?;
    Ok(cri::StopContainerResponse {})
}

pub(super) async fn remove(
    s: &Services,
    req: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse, Error> {
    need_id(&req.container_id)?;
    let id = match s.containers.resolve(&req.container_id) {
        Ok(id) => id,
        Err(crate::container::ContainerError::NotFound(_)) => {
            return Ok(cri::RemoveContainerResponse {});
        }
        Err(e) => return Err(e.into()),
    };
    s.containers.remove(&id).await?;
    super::container_image::release(s, &id).await?;
    Ok(cri::RemoveContainerResponse {})
}

fn cri_state(st: State) -> cri::ContainerState {
    match st {
        State::Created => cri::ContainerState::ContainerCreated,
        State::Running => cri::ContainerState::ContainerRunning,
        State::Exited => cri::ContainerState::ContainerExited,
        State::Unknown => cri::ContainerState::ContainerUnknown,
    }
}

fn metadata(c: &Container) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: c.spec.metadata.name.clone(),
        attempt: c.spec.metadata.attempt,
    }
}

fn to_hash(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The image as the request named it (kubelet shows it back).
fn image_spec(c: &Container) -> cri::ImageSpec {
    cri::ImageSpec {
        image: c.image.reference.clone(),
        user_specified_image: c.image.user_specified.clone(),
        ..Default::default()
    }
}

pub(super) fn status(
    s: &Services,
    req: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, Error> {
    need_id(&req.container_id)?;
    let c = s.containers.get(&req.container_id)?;
    let images = s.images.list()?;
    let exit = c.exit.as_ref();
    let mounts = c
        .spec
        .mounts
        .iter()
        .map(|m| cri::Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.display().to_string(),
            readonly: m.readonly,
            recursive_read_only: m.recursive_read_only,
            propagation: match m.propagation {
                Propagation::Private => cri::MountPropagation::PropagationPrivate,
                Propagation::HostToContainer => cri::MountPropagation::PropagationHostToContainer,
                Propagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
            }
            .into(),
            ..Default::default()
        })
        .collect();
    let mut info = HashMap::new();
    if req.verbose {
        let v = serde_json::json!({
            "pid": c.init_pid,
            "monitorPid": c.monitor_pid,
            "sandboxID": c.pod_id,
            "stateDir": c.dir.display().to_string(),
            "runtimeSpec": c.spec_json(),
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(cri::ContainerStatusResponse {
        status: Some(cri::ContainerStatus {
            id: c.id.clone(),
            metadata: Some(metadata(&c)),
            state: cri_state(c.state()).into(),
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: exit.map_or(0, |e| e.finished_at_ns),
            exit_code: exit.map_or(0, |e| e.exit_code),
            image: Some(image_spec(&c)),
            image_ref: super::container_image::image_ref(&images, &c.image),
            image_id: c.image.id.clone(),
            reason: c.reason().to_string(),
            message: String::new(),
            labels: to_hash(&c.spec.labels),
            annotations: to_hash(&c.spec.annotations),
            mounts,
            log_path: c.log_path.display().to_string(),
            resources: Some(cri::ContainerResources {
                linux: Some(to_cri_resources(&c.spec.resources)),
                windows: None,
            }),
            user: Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: i64::from(c.uid),
                    gid: i64::from(c.gid),
                    supplemental_groups: c.groups.iter().map(|g| i64::from(*g)).collect(),
                }),
            }),
        }),
        info,
    })
}

pub(super) fn list(
    s: &Services,
    req: cri::ListContainersRequest,
) -> Result<cri::ListContainersResponse, Error> {
    let filter = match req.filter {
        None => Filter::default(),
        Some(f) => Filter {
            id: (!f.id.is_empty()).then_some(f.id),
            pod_id: (!f.pod_sandbox_id.is_empty()).then_some(f.pod_sandbox_id),
            state: match f.state {
                None => None,
                Some(v) => Some(match cri::ContainerState::try_from(v.state) {
                    Ok(cri::ContainerState::ContainerCreated) => State::Created,
                    Ok(cri::ContainerState::ContainerRunning) => State::Running,
                    Ok(cri::ContainerState::ContainerExited) => State::Exited,
                    Ok(cri::ContainerState::ContainerUnknown) => State::Unknown,
                    Err(_) => return Err(invalid("filter.state", v.state.to_string())),
                }),
            },
            labels: f.label_selector.into_iter().collect(),
        },
    };
    let images = s.images.list()?;
    let containers = s
        .containers
        .list(&filter)?
        .iter()
        .map(|c| cri::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            metadata: Some(metadata(c)),
            image: Some(image_spec(c)),
            image_ref: super::container_image::image_ref(&images, &c.image),
            image_id: c.image.id.clone(),
            state: cri_state(c.state()).into(),
            created_at: c.created_at,
            labels: to_hash(&c.spec.labels),
            annotations: to_hash(&c.spec.annotations),
        })
        .collect();
    Ok(cri::ListContainersResponse { containers })
}

pub(super) async fn exec_sync(
    s: &Services,
    req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Error> {
    need_id(&req.container_id)?;
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(invalid("cmd", "must name a command"));
    }
    let timeout =
        (req.timeout > 0).then(|| Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0)));
    let out = s
        .containers
        .exec_sync(&req.container_id, req.cmd, timeout)
        .await?;
    Ok(cri::ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

pub(super) async fn update_resources(
    s: &Services,
    req: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, Error> {
    need_id(&req.container_id)?;
    let linux = req.linux.ok_or_else(|| invalid("linux", "is missing"))?;
    s.containers
        .update_resources(&req.container_id, resources(linux))
        .await?;
    Ok(cri::UpdateContainerResourcesResponse {})
}

pub(super) async fn reopen_log(
    s: &Services,
    req: cri::ReopenContainerLogRequest,
) -> Result<cri::ReopenContainerLogResponse, Error> {
    need_id(&req.container_id)?;
    s.containers.reopen_log(&req.container_id).await?;
    Ok(cri::ReopenContainerLogResponse {})
}

async fn stats_of(s: &Services, c: &Container) -> Result<cri::ContainerStats, Error> {
    let st = s.containers.stats(c).await?;
    let ts = st.timestamp;
    let v = |value: u64| Some(cri::UInt64Value { value });
    Ok(cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(metadata(c)),
            labels: to_hash(&c.spec.labels),
            annotations: to_hash(&c.spec.annotations),
        }),
        cpu: Some(cri::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: v(st.cgroup.cpu_usage_ns),
            usage_nano_cores: None,
        }),
        memory: Some(cri::MemoryUsage {
            timestamp: ts,
            working_set_bytes: v(st.cgroup.memory_working_set_bytes),
            available_bytes: st
                .cgroup
                .memory_limit_bytes
                .map(|l| l.saturating_sub(st.cgroup.memory_working_set_bytes))
                .and_then(v),
            usage_bytes: v(st.cgroup.memory_usage_bytes),
            rss_bytes: v(st.cgroup.memory_rss_bytes),
            page_faults: v(st.cgroup.page_faults),
            major_page_faults: v(st.cgroup.major_page_faults),
        }),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: s.containers.snapshots_root().display().to_string(),
            }),
            used_bytes: v(st.writable.bytes),
            inodes_used: v(st.writable.inodes),
        }),
        swap: Some(cri::SwapUsage {
            timestamp: ts,
            swap_available_bytes: None,
            swap_usage_bytes: v(st.cgroup.swap_usage_bytes),
        }),
    })
}

pub(super) async fn stats(
    s: &Services,
    req: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, Error> {
    need_id(&req.container_id)?;
    let c = s.containers.get(&req.container_id)?;
    Ok(cri::ContainerStatsResponse {
        stats: Some(stats_of(s, &c).await?),
    })
}

pub(super) async fn list_stats(
    s: &Services,
    req: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, Error> {
    let filter = match req.filter {
        None => Filter::default(),
        Some(f) => Filter {
            id: (!f.id.is_empty()).then_some(f.id),
            pod_id: (!f.pod_sandbox_id.is_empty()).then_some(f.pod_sandbox_id),
            state: None,
            labels: f.label_selector.into_iter().collect(),
        },
    };
    let mut stats = Vec::new();
    for c in s.containers.list(&filter)? {
        stats.push(stats_of(s, &c).await?);
    }
    Ok(cri::ListContainerStatsResponse { stats })
}
