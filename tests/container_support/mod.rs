//! Fixtures of the container tests: a daemon with the busybox test image
//! pulled from a private registry, and CRI helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pod_support::*;
use crate::support::Registry;
use crate::support::engine::{LogLine, log_lines};
use crate::support::net::TestNetwork;
use k8s_cri::v1 as cri;
use yonggi::testimages::Set;
use yonggi::testimages::catalog::{self, names};

pub struct Env {
    pub _registry: Registry,
    pub daemon: crate::support::Daemon,
    pub rt: Client,
    pub image: String,
    pub logs: tempfile::TempDir,
    pub pod_names: Vec<String>,
    pub _net: TestNetwork,
}

pub async fn env() -> Env {
    env_with("").await
}

/// [`env`] with `extra` appended to the daemon's config.
pub async fn env_with(extra: &str) -> Env {
    let net = TestNetwork::new();
    let registry = Registry::start();
    let busybox = catalog::find(Set::All, names::BUSYBOX, "latest")
        .expect("catalog")
        .expect("busybox image");
    registry.push(&[busybox]).await;
    let daemon = pod_daemon(&net, extra);
    let image = registry.reference(names::BUSYBOX, "latest");
    let mut images = daemon.images().await;
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("PullImage");
    let rt = daemon.runtime().await;
    let logs = tempfile::Builder::new()
        .prefix("yonggi-ctr-logs-")
        .tempdir()
        .expect("log dir");
    Env {
        _registry: registry,
        daemon,
        rt,
        image,
        logs,
        pod_names: Vec::new(),
        _net: net,
    }
}

impl Env {
    pub async fn pod(&mut self, name: &str) -> String {
        let mut c = config(name);
        c.log_directory = self.logs.path().join(name).display().to_string();
        self.pod_names.push(name.to_string());
        c.linux.as_mut().expect("linux").cgroup_parent =
            format!("/yonggi-test-{:08x}", rand::random::<u32>());
        run(&mut self.rt, c).await.expect("RunPodSandbox")
    }

    /// The log of container `name` of the pod `pod_name` (its log directory).
    pub fn log_file(&self, pod_name: &str, name: &str) -> PathBuf {
        self.logs.path().join(pod_name).join(format!("{name}.log"))
    }

    pub fn container(&self, name: &str, command: &[&str], args: &[&str]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        }
    }

    pub async fn create(
        &mut self,
        pod: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start(&mut self, id: &str) {
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .expect("StartContainer");
    }

    pub async fn status(&mut self, id: &str) -> cri::ContainerStatusResponse {
        self.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
    }

    pub async fn wait_exited(&mut self, id: &str) -> cri::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self.status(id).await.status.expect("status");
            if st.state() == cri::ContainerState::ContainerExited {
                return st;
            }
            assert!(Instant::now() < deadline, "{id} never exited: {st:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a container to its end: its status and log lines.
    pub async fn run_to_end(
        &mut self,
        pod: &str,
        config: cri::ContainerConfig,
    ) -> (cri::ContainerStatus, Vec<LogLine>) {
        let name = config.metadata.as_ref().expect("meta").name.clone();
        let id = self.create(pod, config).await.expect("CreateContainer");
        self.start(&id).await;
        let st = self.wait_exited(&id).await;
        let log = PathBuf::from(&st.log_path);
        assert!(
            self.pod_names
                .iter()
                .any(|p| log == self.log_file(p, &name)),
            "{log:?}"
        );
        let lines = if log.exists() {
            log_lines(&log)
        } else {
            Vec::new()
        };
        self.remove(&id).await;
        (st, lines)
    }

    pub async fn stop(&mut self, id: &str, timeout: i64) {
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout,
            })
            .await
            .expect("StopContainer");
    }

    pub async fn remove(&mut self, id: &str) {
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .expect("RemoveContainer");
    }

    pub async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        self.rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Nothing of container `id` remains: processes, mounts, cgroup, files.
    pub fn assert_gone(&self, id: &str, pids: &[i64]) {
        for pid in pids {
            let pid = i32::try_from(*pid).expect("pid");
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) {
                assert!(
                    Instant::now() < deadline,
                    "process {pid} of {id} still runs"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert_eq!(
            mountinfo_mentions(id),
            Vec::<String>::new(),
            "mounts of {id}"
        );
        let dir = self.daemon.dir.path().display().to_string();
        assert!(
            !find_dir(Path::new("/sys/fs/cgroup"), id, 6),
            "a cgroup of {id} is left"
        );
        assert!(
            !find_dir(self.daemon.dir.path(), id, 4),
            "files of {id} under {dir}"
        );
    }
}

pub fn find_dir(root: &Path, name: &str, depth: u32) -> bool {
    if depth == 0 {
        return false;
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            is_dir
                && (e.file_name().to_string_lossy().contains(name)
                    || find_dir(&e.path(), name, depth - 1))
        })
}

pub fn ctr_info(st: &cri::ContainerStatusResponse) -> serde_json::Value {
    serde_json::from_str(st.info.get("info").expect("verbose info")).expect("json")
}

/// The directory of cgroup controller `controller` of process `pid` as the
/// host sees it: a v1 hierarchy naming it, else the unified one.
pub fn cgroup_dir(pid: i64, controller: &str) -> Option<(PathBuf, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if ctrls.split(',').any(|c| c == controller) {
            return Some((Path::new("/sys/fs/cgroup").join(ctrls).join(rel), true));
        }
        if ctrls.is_empty() {
            let root = if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
                Path::new("/sys/fs/cgroup/unified")
            } else {
                Path::new("/sys/fs/cgroup")
            };
            unified = Some(root.join(rel));
        }
    }
    let dir = unified?;
    let offered = std::fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
    offered
        .split_whitespace()
        .any(|c| c == controller)
        .then_some((dir, false))
}
