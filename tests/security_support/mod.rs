//! Fixtures of the security-context tests: a daemon with busybox, its USER
//! variants, the predefined-group image and critest's setuid `nnp` image
//! pulled, pods (privileged or not), and readers of `/proc/self/status`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use crate::container_support::Env;
use crate::pod_support::*;
use crate::support::Registry;
use crate::support::net::TestNetwork;
use k8s_cri::v1 as cri;
use yonggi::testimages::catalog::{self, names};
use yonggi::testimages::{Set, critest};

/// The images pulled besides busybox (`Env::image`), by repository.
pub const USER_IMAGES: [&str; 5] = [
    names::USER_UID,
    names::USER_USERNAME,
    names::USER_UID_GROUP,
    names::USER_USERNAME_GROUP,
    names::PREDEFINED_GROUP,
];

pub async fn env() -> Env {
    let net = TestNetwork::new();
    let registry = Registry::start();
    let mut images = Vec::new();
    for name in std::iter::once(names::BUSYBOX).chain(USER_IMAGES) {
        images.push(
            catalog::find(Set::All, name, "latest")
                .expect("catalog")
                .expect(name),
        );
    }
    images.push(
        catalog::find(Set::Critest, critest::NONEWPRIVS, critest::NONEWPRIVS_TAG)
            .expect("catalog")
            .expect("nonewprivs"),
    );
    registry.push(&images).await;
    let daemon = pod_daemon(&net, "");
    let mut client = daemon.images().await;
    for image in &images {
        for tag in &image.tags {
            client
                .pull_image(cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image: registry.reference(&image.repository, tag),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .expect("PullImage");
        }
    }
    let rt = daemon.runtime().await;
    let logs = tempfile::Builder::new()
        .prefix("yonggi-sec-logs-")
        .tempdir()
        .expect("log dir");
    Env {
        image: registry.reference(names::BUSYBOX, "latest"),
        _registry: registry,
        daemon,
        rt,
        logs,
        pod_names: Vec::new(),
        _net: net,
    }
}

/// The pulled reference of a `yonggi-test/...` image.
pub fn image(e: &Env, repository: &str) -> String {
    e._registry.reference(repository, "latest")
}

pub fn nnp_image(e: &Env) -> String {
    e._registry
        .reference(critest::NONEWPRIVS, critest::NONEWPRIVS_TAG)
}

/// A pod whose sandbox security context says `privileged`.
pub async fn pod(e: &mut Env, name: &str, privileged: bool) -> String {
    let mut c = config(name);
    c.log_directory = e.logs.path().join(name).display().to_string();
    e.pod_names.push(name.to_string());
    let linux = c.linux.as_mut().expect("linux");
    linux.cgroup_parent = format!("/yonggi-test-{:08x}", rand::random::<u32>());
    linux.security_context.as_mut().expect("sc").privileged = privileged;
    run(&mut e.rt, c).await.expect("RunPodSandbox")
}

/// `config` with the security context `sc`.
pub fn with_sc(
    mut config: cri::ContainerConfig,
    sc: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    config
}

/// A container running `sh -c script` to its end: exit code and stdout.
pub async fn output(e: &mut Env, pod: &str, config: cri::ContainerConfig) -> (i32, String) {
    let (st, lines) = e.run_to_end(pod, config).await;
    let stdout: String = lines
        .iter()
        .filter(|l| l.stream == "stdout")
        .map(|l| format!("{}\n", l.content))
        .collect();
    (st.exit_code, stdout)
}

/// A busybox container running `script` under `sc`, to its end.
pub async fn script(
    e: &mut Env,
    pod: &str,
    name: &str,
    sc: cri::LinuxContainerSecurityContext,
    script: &str,
) -> (i32, String) {
    let config = with_sc(e.container(name, &["sh", "-c", script], &[]), sc);
    output(e, pod, config).await
}

/// Creates and starts `config` and waits until it runs.
pub async fn running(e: &mut Env, pod: &str, config: cri::ContainerConfig) -> String {
    let id = e.create(pod, config).await.expect("CreateContainer");
    e.start(&id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = e.status(&id).await.status.expect("status");
        match st.state() {
            cri::ContainerState::ContainerRunning => return id,
            cri::ContainerState::ContainerExited => panic!("{id} exited: {st:?}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{id} never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sh -c script` exec'd in `id`: exit code, stdout, stderr.
pub async fn sh(e: &mut Env, id: &str, script: &str) -> (i32, String, String) {
    let r = e
        .exec(id, &["sh", "-c", script], 10)
        .await
        .expect("ExecSync");
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// A hex field of `/proc/<pid>/status` (`CapBnd`, `CapEff`...) in `text`.
pub fn hex_field(text: &str, field: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {text:?}"));
    let value = line.split_whitespace().nth(1).expect("value");
    u64::from_str_radix(value, 16).expect("hex")
}

/// A decimal field of `/proc/<pid>/status` (`Seccomp`, `NoNewPrivs`).
pub fn field(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {text:?}"))
        .trim()
        .to_string()
}

/// The kernel's bit mask of OCI capabilities, only those this kernel has.
pub fn mask<'a>(caps: impl IntoIterator<Item = &'a oci_spec::runtime::Capability>) -> u64 {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("number");
    caps.into_iter()
        .map(|c| {
            format!("CAP_{c}")
                .parse::<caps::Capability>()
                .expect("known to caps")
                .index()
        })
        .filter(|i| u32::from(*i) <= last)
        .fold(0, |m, i| m | (1u64 << i))
}

/// The bounding set of this (root) test process: what the daemon, started
/// the same way, can grant.
fn own_mask() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    hex_field(&status, "CapBnd")
}

pub fn default_mask() -> u64 {
    mask(yonggi::security::capabilities::DEFAULT.iter()) & own_mask()
}

/// "Every capability": every known one the runtime holds.
pub fn all_mask() -> u64 {
    mask(yonggi::security::capabilities::all().iter()) & own_mask()
}

pub fn user_of(st: &cri::ContainerStatus) -> (i64, i64, Vec<i64>) {
    let u = st
        .user
        .as_ref()
        .and_then(|u| u.linux.as_ref())
        .expect("ContainerStatus.user.linux");
    (u.uid, u.gid, u.supplemental_groups.clone())
}

pub fn caps(add: &[&str], drop: &[&str]) -> Option<cri::Capability> {
    Some(cri::Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        add_ambient_capabilities: Vec::new(),
    })
}

pub fn profile(
    typ: cri::security_profile::ProfileType,
    path: &str,
) -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: typ.into(),
        localhost_ref: path.to_string(),
    })
}

/// Writes `json` as a Localhost seccomp profile under `dir`.
pub fn profile_file(dir: &tempfile::TempDir, name: &str, json: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, json).expect("write profile");
    path.display().to_string()
}

pub const BLOCK_SETHOSTNAME: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]
}"#;

/// A running busybox `sleep 1000` under `sc`.
pub async fn sleeper(
    e: &mut Env,
    pod: &str,
    name: &str,
    sc: cri::LinuxContainerSecurityContext,
) -> String {
    let config = with_sc(e.container(name, &["sleep", "1000"], &[]), sc);
    running(e, pod, config).await
}
