//! Fixtures of the pod sandbox tests: a root-only daemon on a private pod
//! network (`support::net::TestNetwork`), CRI helpers, leak checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Daemon, DaemonOptions};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::Signal;
use tonic::transport::Channel;

pub type Client = RuntimeServiceClient<Channel>;

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

pub fn config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: unique("uid"),
            namespace: "yonggi-test".to_string(),
            attempt: 1,
        }),
        hostname: name.to_string(),
        log_directory: String::new(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod.into(),
                    pid: cri::NamespaceMode::Container.into(),
                    ipc: cri::NamespaceMode::Pod.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ns_options(c: &mut cri::PodSandboxConfig) -> &mut cri::NamespaceOption {
    c.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("namespace options")
}

pub fn sysctls(c: &mut cri::PodSandboxConfig) -> &mut HashMap<String, String> {
    &mut c.linux.as_mut().expect("linux").sysctls
}

pub async fn run(rt: &mut Client, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

pub async fn status(
    rt: &mut Client,
    id: &str,
) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
    rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose: true,
    })
    .await
    .map(|r| r.into_inner())
}

pub async fn stop(rt: &mut Client, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    })
    .await
    .expect("StopPodSandbox");
}

pub async fn remove(rt: &mut Client, id: &str) {
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    })
    .await
    .expect("RemovePodSandbox");
}

pub async fn list(rt: &mut Client, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
    rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
}

/// The `info` JSON of a verbose status.
pub fn info(status: &cri::PodSandboxStatusResponse) -> serde_json::Value {
    serde_json::from_str(status.info.get("info").expect("verbose info")).expect("info is JSON")
}

pub fn info_path(status: &cri::PodSandboxStatusResponse, key: &str) -> Option<PathBuf> {
    info(status)[key].as_str().map(PathBuf::from)
}

pub fn pods_dir(daemon: &Daemon) -> PathBuf {
    daemon.dir.path().join("run/pods")
}

pub fn nsenter(args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn mountinfo_mentions(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// No mount, directory or process of the pod remains.
pub fn assert_gone(daemon: &Daemon, id: &str, holder: Option<i32>) {
    assert_eq!(
        mountinfo_mentions(id),
        Vec::<String>::new(),
        "mounts of {id}"
    );
    assert!(!pods_dir(daemon).join(id).exists(), "state dir of {id}");
    assert_eq!(
        iptables_rules_for(id),
        Vec::<String>::new(),
        "iptables rules of {id}"
    );
    if let Some(pid) = holder {
        assert!(!process_alive(pid), "holder {pid} of {id} still runs");
    }
}

/// True when `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Undoes whatever a failing test left of its pods (a panic skips the
/// test's own stop/remove): holders killed, mounts under the daemon's temp
/// dir detached. Declared after the daemon, so it runs before the temp dir
/// is deleted.
pub struct Leftovers(PathBuf);

impl Leftovers {
    pub fn of(daemon: &Daemon) -> Leftovers {
        Leftovers(daemon.dir.path().to_path_buf())
    }
}

/// Processes of the daemon rooted at `dir` that outlive it (container
/// monitors) and everything below them, with the test cgroups they are
/// in: killed and removed, so a failed test leaks none of them.
fn kill_monitors_of(dir: &str) {
    let mut parent_of = HashMap::new();
    let mut monitors = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent_of.insert(pid, ppid);
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let daemon_child = cmdline.contains("\0monitor\0") || cmdline.contains("pod-init");
        if daemon_child && cmdline.contains(dir) {
            monitors.push(pid);
        }
    }
    let below = |pid: i32| {
        let mut p = pid;
        while let Some(&up) = parent_of.get(&p) {
            if monitors.contains(&up) {
                return true;
            }
            if up <= 1 {
                return false;
            }
            p = up;
        }
        false
    };
    let doomed: Vec<i32> = parent_of
        .keys()
        .copied()
        .filter(|&pid| monitors.contains(&pid) || below(pid))
        .collect();
    let mut cgroups = Vec::new();
    for pid in &doomed {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        for line in text.lines() {
            if let Some(path) = line.splitn(3, ':').nth(2)
                && path.contains("/yonggi-test-")
                && !cgroups.iter().any(|c| c == path)
            {
                cgroups.push(path.trim_start_matches('/').to_string());
            }
        }
    }
    for pid in &doomed {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while doomed.iter().any(|p| process_alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain(std::iter::once(PathBuf::from("/sys/fs/cgroup")))
        .collect();
    for path in &cgroups {
        let parent = Path::new(path).parent().map(Path::to_path_buf);
        for h in &hierarchies {
            let _ = std::fs::remove_dir(h.join(path));
            // The test's random cgroup parent, with what else the dead
            // pods left in it (their sandbox cgroups).
            if let Some(parent) = &parent
                && parent.to_string_lossy().starts_with("yonggi-test-")
            {
                for sub in std::fs::read_dir(h.join(parent))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if sub.path().is_dir() {
                        let _ = std::fs::remove_dir(sub.path());
                    }
                }
                let _ = std::fs::remove_dir(h.join(parent));
            }
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let dir = self.0.display().to_string();
        kill_monitors_of(&dir);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("pod-init") && cmdline.contains(&dir) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            }
        }
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

pub fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").ino()
}

pub use crate::support::net::TestNetwork;

/// A root-only daemon on `net`, with `extra` config appended.
pub fn pod_daemon(net: &TestNetwork, extra: &str) -> Daemon {
    crate::support::daemon::require_root();
    Daemon::start_with(DaemonOptions {
        extra_config: format!("{}{extra}", net.config_toml()),
    })
}

/// Host ends of the veths on `bridge`.
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let dir = Path::new("/sys/class/net").join(bridge).join("brif");
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// iptables rules that mention `needle` (CNI tags its rules with the pod id).
pub fn iptables_rules_for(needle: &str) -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}
