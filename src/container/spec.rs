//! What a container is asked to be, in domain terms (the CRI layer fills it
//! in from the request and the image), and the OCI runtime spec built from
//! it with Kubernetes' merge rules: `command` replaces the image entrypoint,
//! `args` replace its cmd (and a `command` alone drops the image cmd), the
//! request's env overrides the image's by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, ProcessBuilder,
    Root, Spec,
};
use serde::{Deserialize, Serialize};

use super::ContainerError;
use crate::pod::Sandbox;
use crate::security::SecurityContext;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub attempt: u32,
}

/// The image a container runs, as the image service resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageInfo {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// The reference the request named (kubelet shows it back).
    pub reference: String,
    /// Unpacked layers, lowest first.
    pub layer_dirs: Vec<PathBuf>,
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    /// The image as the user wrote it (kubelet's `user_specified_image`).
    #[serde(default)]
    pub user_specified: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    Private,
    /// rslave
    HostToContainer,
    /// rshared
    Bidirectional,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub container_path: String,
    pub host_path: PathBuf,
    pub readonly: bool,
    pub recursive_read_only: bool,
    pub propagation: Propagation,
}

/// A host device the container gets (CRI `devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRequest {
    pub container_path: String,
    pub host_path: PathBuf,
    /// Some of `r`, `w`, `m`; empty means all.
    pub permissions: String,
}

/// LinuxContainerResources in cgroup terms; `None`/0 means unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerResources {
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub memory_limit: Option<i64>,
    pub memory_swap_limit: Option<i64>,
    pub oom_score_adj: i64,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// (page size like `2MB`, bytes)
    pub hugepages: Vec<(String, u64)>,
    pub unified: BTreeMap<String, String>,
}

impl ContainerResources {
    pub fn cgroup(&self) -> crate::runtime::cgroup::Resources {
        crate::runtime::cgroup::Resources {
            cpu_shares: self.cpu_shares,
            cpu_quota: self.cpu_quota,
            cpu_period: self.cpu_period,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            memory_limit: self.memory_limit,
            memory_swap: self.memory_swap_limit,
            hugepage_limits: self
                .hugepages
                .iter()
                .map(|(page_size, limit)| crate::runtime::cgroup::HugepageLimit {
                    page_size: page_size.clone(),
                    limit: *limit,
                })
                .collect(),
            unified: self.unified.clone(),
            ..Default::default()
        }
    }
}

/// Everything CreateContainer asked for, stored as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub metadata: Metadata,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<VolumeMount>,
    #[serde(default)]
    pub devices: Vec<DeviceRequest>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log directory.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: ContainerResources,
    /// Identity and confinement (see `confine.rs`).
    #[serde(default)]
    pub security: SecurityContext,
    /// The container's `userns_options`, when it sent any: checked
    /// against the pod's (the container always joins the pod's).
    #[serde(default)]
    pub userns: Option<crate::security::userns::ContainerUserns>,
}

/// The process to run: command line, env and cwd after the merge rules.
pub(super) fn argv(spec: &ContainerSpec, image: &ImageInfo) -> Result<Vec<String>, ContainerError> {
    let (entrypoint, cmd) = if !spec.command.is_empty() {
        (spec.command.clone(), spec.args.clone())
    } else if !spec.args.is_empty() {
        (image.entrypoint.clone(), spec.args.clone())
    } else {
        (image.entrypoint.clone(), image.cmd.clone())
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(ContainerError::NoCommand(image.reference.clone()));
    }
    Ok(argv)
}

pub(super) fn env(spec: &ContainerSpec, image: &ImageInfo) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in &spec.envs {
        set(k, v);
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The propagation of the container's `/` its volumes need, as kubelet's
/// runtimes set it: a bidirectional volume is bound while `/` is rshared
/// (so the bind joins the host mount's peer group and mounts made inside
/// reach the host); a host-to-container one needs at least rslave. `None`
/// leaves the engine's default, rslave, which rprivate volumes override.
pub(super) fn rootfs_propagation(mounts: &[VolumeMount]) -> Option<&'static str> {
    if mounts
        .iter()
        .any(|m| m.propagation == Propagation::Bidirectional)
    {
        Some("rshared")
    } else if mounts
        .iter()
        .any(|m| m.propagation == Propagation::HostToContainer)
    {
        Some("rslave")
    } else {
        None
    }
}

fn bind(dest: &str, source: &Path, options: &[&str]) -> Result<Mount, ContainerError> {
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(ContainerError::Spec)
}

/// The pod's user namespace, when it has one: joined by path, with its
/// mappings (which the runtime checks against the namespace it joins and
/// uses to give the container's `/dev` to its root).
fn user_namespace(
    pod: &Sandbox,
    namespaces: &mut Vec<oci_spec::runtime::LinuxNamespace>,
    linux: LinuxBuilder,
) -> Result<LinuxBuilder, ContainerError> {
    let (Some(path), Some(m)) = (pod.userns_path(), pod.spec.userns.as_ref()) else {
        return Ok(linux);
    };
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .path(path)
            .build()
            .map_err(ContainerError::Spec)?,
    );
    Ok(linux
        .uid_mappings(m.oci_uid_mappings())
        .gid_mappings(m.oci_gid_mappings()))
}

/// In a pod with a user namespace, a volume is bound idmapped through it:
/// what is root's on disk is the container root's, and what it writes is
/// stored with the ids it sees (as kubelet expects of its volumes).
/// (The OCI `idmap`/`ridmap` option: the container's own mappings.)
fn idmap_volume(pod: &Sandbox, options: &mut Vec<&str>) {
    if pod.spec.userns.is_some() {
        options.push("ridmap");
    }
}

/// The OCI spec of the container: the request merged over the image, in the
/// pod's namespaces.
pub(super) fn build(
    spec: &ContainerSpec,
    image: &ImageInfo,
    pod: &Sandbox,
    rootfs: &Path,
) -> Result<Spec, ContainerError> {
    let cwd = if !spec.working_dir.is_empty() {
        spec.working_dir.clone()
    } else if !image.working_dir.is_empty() {
        image.working_dir.clone()
    } else {
        "/".to_string()
    };
    let process = ProcessBuilder::default()
        .terminal(spec.tty)
        .args(argv(spec, image)?)
        .env(env(spec, image))
        .cwd(cwd)
        .build()
        .map_err(ContainerError::Spec)?;

    let mut mounts: Vec<Mount> = Spec::default().mounts().clone().unwrap_or_default();
    let taken = |mounts: &[Mount], dest: &str| {
        spec.mounts.iter().any(|m| m.container_path == dest)
            || mounts.iter().any(|m| m.destination() == Path::new(dest))
    };
    let mut etc = vec![
        ("/etc/hosts", pod.hosts_path()),
        ("/etc/resolv.conf", pod.resolv_conf_path()),
    ];
    if pod.uts_ns_path().is_some() {
        etc.push(("/etc/hostname", pod.hostname_path()));
    }
    for (dest, src) in etc {
        if !taken(&mounts, dest) && src.exists() {
            mounts.push(bind(dest, &src, &["rbind", "rprivate", "rw"])?);
        }
    }
    if let Some(shm) = pod.shm_path() {
        mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
        mounts.push(bind("/dev/shm", &shm, &["rbind", "rprivate", "rw"])?);
    }
    for m in &spec.mounts {
        let mut options = vec!["rbind"];
        options.push(match m.propagation {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        });
        options.push(if m.readonly { "ro" } else { "rw" });
        if m.recursive_read_only {
            options.push("rro");
        }
        mounts.retain(|x| x.destination() != Path::new(&m.container_path));
        // A symlinked host path is resolved on the host, now: the link
        // cannot be swapped for another target between create and start.
        let source = std::fs::canonicalize(&m.host_path).unwrap_or_else(|_| m.host_path.clone());
        idmap_volume(pod, &mut options);
        mounts.push(bind(&m.container_path, &source, &options)?);
    }

    let ns = |typ, path: Option<PathBuf>| {
        let mut b = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().map_err(ContainerError::Spec)
    };
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Mount, None)?,
        ns(LinuxNamespaceType::Cgroup, None)?,
    ];
    if let Some(p) = pod.netns_path() {
        namespaces.push(ns(LinuxNamespaceType::Network, Some(p))?);
    }
    if let Some(p) = pod.ipc_ns_path() {
        namespaces.push(ns(LinuxNamespaceType::Ipc, Some(p))?);
    }
    if let Some(p) = pod.uts_ns_path() {
        namespaces.push(ns(LinuxNamespaceType::Uts, Some(p))?);
    }
    match pod.spec.namespaces.pid {
        crate::pod::PidMode::Pod => {
            namespaces.push(ns(LinuxNamespaceType::Pid, pod.pid_ns_path())?);
        }
        crate::pod::PidMode::Container => namespaces.push(ns(LinuxNamespaceType::Pid, None)?),
        crate::pod::PidMode::Node => {}
    }
    let mut linux = user_namespace(pod, &mut namespaces, LinuxBuilder::default())?;
    linux = linux.namespaces(namespaces);
    let devices = spec
        .devices
        .iter()
        .map(|d| super::devices::resolve(d).map(|d| d.node))
        .collect::<Result<Vec<_>, _>>()?;
    if !devices.is_empty() {
        linux = linux.devices(devices);
    }
    if let Some(prop) = rootfs_propagation(&spec.mounts) {
        linux = linux.rootfs_propagation(prop);
    }
    let linux = linux.build().map_err(ContainerError::Spec)?;

    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    let mut out = Spec::default();
    out.set_root(Some(root));
    out.set_process(Some(process));
    out.set_mounts(Some(mounts));
    out.set_linux(Some(linux));
    out.set_hostname(None);
    if let Some(anns) = (!spec.annotations.is_empty()).then(|| {
        spec.annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }) {
        out.set_annotations(Some(anns));
    }
    super::confine::apply(&mut out, &spec.security, image, rootfs)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &[&str], args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            metadata: Metadata {
                name: "c".into(),
                attempt: 0,
            },
            image: "img".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            working_dir: String::new(),
            envs: vec![("B".into(), "req".into()), ("C".into(), "new".into())],
            mounts: vec![],
            devices: vec![],
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            log_path: "c.log".into(),
            stdin: false,
            stdin_once: false,
            tty: false,
            resources: ContainerResources::default(),
            security: SecurityContext::default(),
            userns: None,
        }
    }

    fn image() -> ImageInfo {
        ImageInfo {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["default".into()],
            env: vec!["A=img".into(), "B=img".into()],
            ..ImageInfo::default()
        }
    }

    #[test]
    fn kubernetes_merge_rules() {
        let img = image();
        let a = |c: &[&str], r: &[&str]| argv(&spec(c, r), &img).expect("argv");
        assert_eq!(a(&[], &[]), ["/ep", "default"]);
        assert_eq!(a(&[], &["x"]), ["/ep", "x"]);
        assert_eq!(a(&["/bin/sh"], &[]), ["/bin/sh"]);
        assert_eq!(a(&["/bin/sh"], &["-c", "x"]), ["/bin/sh", "-c", "x"]);
        let none = ImageInfo::default();
        assert!(argv(&spec(&[], &[]), &none).is_err());
        let e = env(&spec(&[], &[]), &img);
        assert!(e.contains(&"A=img".to_string()));
        assert!(e.contains(&"B=req".to_string()));
        assert!(e.contains(&"C=new".to_string()));
        assert!(!e.contains(&"B=img".to_string()));
    }
}
