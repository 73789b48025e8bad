//! The container engine below the CRI (snapshot + runtime + monitor),
//! driven directly as root with a busybox rootfs: a case, its spec, the
//! CRI log parser and leak checks shared by the engine test binaries.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, Root, Spec,
};
use yonggi::monitor::{self, ExitStatus, Launched, MonitorConfig};
use yonggi::runtime::cgroup::{Cgroup, CgroupPath, Cgroups, Resources};
use yonggi::snapshot::{Backend, Snapshotter};

use super::daemon::{require_root, yonggi_bin};

pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Case {
    pub dir: tempfile::TempDir,
    pub snapshots: Snapshotter,
    pub rootfs: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    pub pids: Vec<i32>,
}

impl Case {
    pub fn new() -> Case {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("yonggi-rt-")
            .tempdir()
            .expect("tempdir");
        let base = dir.path().join("layers/base");
        fs::create_dir_all(&base).expect("layer dir");
        super::rootfs::busybox(&base);
        let top = dir.path().join("layers/top");
        fs::create_dir_all(top.join("etc")).expect("layer dir");
        fs::write(top.join("etc/layer"), "top\n").expect("layer file");
        let snapshots = Snapshotter::new(dir.path(), Backend::Overlay);
        let snap = snapshots
            .prepare("c1", &[base, top], false)
            .expect("prepare the snapshot");
        let state = dir.path().join("state");
        fs::create_dir_all(&state).expect("state dir");
        fs::create_dir_all(dir.path().join("logs")).expect("log dir");
        Case {
            log: dir.path().join("logs/c1.log"),
            rootfs: snap.rootfs,
            snapshots,
            state,
            dir,
            pids: Vec::new(),
        }
    }

    pub fn spec(&self, args: &[&str]) -> Spec {
        let mut spec = Spec::default();
        spec.set_root(Some(Root::default()));
        if let Some(root) = spec.root_mut() {
            root.set_path(self.rootfs.clone());
        }
        spec.set_hostname(Some("yonggi-test".to_string()));
        let process = spec.process_mut().as_mut().expect("default process");
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        let caps: oci_spec::runtime::Capabilities = yonggi::security::capabilities::DEFAULT
            .into_iter()
            .collect();
        process.set_capabilities(Some(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()
                .expect("caps"),
        ));
        let linux = spec.linux_mut().as_mut().expect("default linux");
        let namespaces = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Cgroup,
        ]
        .into_iter()
        .map(|typ| {
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .expect("ns")
        })
        .collect();
        linux.set_namespaces(Some(namespaces));
        spec
    }

    pub fn config(&self) -> MonitorConfig {
        MonitorConfig {
            log_path: self.log.clone(),
            ..MonitorConfig::default()
        }
    }

    pub fn launch(&mut self, spec: &Spec) -> Launched {
        let launched = monitor::launch(
            &yonggi_bin(),
            &self.state,
            spec,
            &self.config(),
            LAUNCH_TIMEOUT,
        )
        .expect("launch the monitor");
        self.pids.push(launched.monitor_pid);
        self.pids.push(launched.init_pid);
        launched
    }

    /// Runs `args` to completion: its exit and its log lines.
    pub fn run(&mut self, spec: &Spec) -> (ExitStatus, Vec<LogLine>) {
        self.launch(spec);
        monitor::start(&self.state).expect("start");
        let status = monitor::wait(&self.state).expect("wait");
        (status, log_lines(&self.log))
    }

    pub fn add_bind(spec: &mut Spec, source: &Path, dest: &str, options: &[&str]) {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.push(
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(source)
                .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .build()
                .expect("mount"),
        );
        spec.set_mounts(Some(mounts));
    }

    /// Everything the case made is gone: processes, mounts, files.
    pub fn finish(mut self) {
        for pid in self.pids.drain(..) {
            wait_gone(pid);
        }
        self.snapshots.remove("c1").expect("remove the snapshot");
        let dir = self.dir.path().to_string_lossy().into_owned();
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!info.contains(&dir), "mounts left under {dir}:\n{info}");
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.snapshots.remove("c1");
    }
}

/// A process we did not fork (the monitor is re-parented) ends within a
/// bound; a leak fails the test.
pub fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let path = PathBuf::from(format!("/proc/{pid}"));
    while path.exists() {
        let status = fs::read_to_string(path.join("status")).unwrap_or_default();
        if status.contains("State:\tZ") {
            // Exited; its parent (init) reaps it.
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} is still there:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct LogLine {
    pub stream: String,
    pub tag: String,
    pub content: String,
}

pub fn log_lines(path: &Path) -> Vec<LogLine> {
    let text = fs::read_to_string(path).expect("read the log");
    text.split_inclusive('\n')
        .map(|line| {
            let line = line
                .strip_suffix('\n')
                .expect("every log line ends with a newline");
            let mut parts = line.splitn(4, ' ');
            let time = parts.next().expect("time");
            assert_time(time);
            LogLine {
                stream: parts.next().expect("stream").to_string(),
                tag: parts.next().expect("tag").to_string(),
                content: parts.next().unwrap_or("").to_string(),
            }
        })
        .collect()
}

/// `2006-01-02T15:04:05.999999999Z`, the Go RFC3339Nano layout in UTC.
pub fn assert_time(time: &str) {
    let b = time.as_bytes();
    let ok = b.len() == 30
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[29] == b'Z'
        && time[..4].parse::<u32>().is_ok_and(|y| y >= 2024);
    assert!(ok, "bad log timestamp {time:?}");
}

pub fn line(stream: &str, tag: &str, content: &str) -> LogLine {
    LogLine {
        stream: stream.into(),
        tag: tag.into(),
        content: content.into(),
    }
}

/// Waits until `path` has `text`, the container's side of a handshake.
pub fn wait_for(path: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(path).unwrap_or_default().contains(text) {
        assert!(
            Instant::now() < deadline,
            "{} never got {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A cgroup of the test's own, made by the cgroup manager with a memory
/// limit (and no swap to escape to); killed and deleted on drop.
pub struct TestCgroup {
    pub cgroups: Cgroups,
    pub cg: Cgroup,
}

impl TestCgroup {
    pub fn new(memory: i64) -> TestCgroup {
        let cgroups = Cgroups::detect().expect("detect cgroups");
        let path = CgroupPath::parse(&format!(
            "/yonggi-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ))
        .expect("cgroup path");
        let res = Resources {
            memory_limit: Some(memory),
            memory_swap: Some(memory),
            ..Resources::default()
        };
        let cg = cgroups
            .create_with(&path, &res)
            .expect("create the test cgroup");
        TestCgroup { cgroups, cg }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.cgroups.kill_all(&self.cg, Duration::from_secs(10));
        let _ = self.cgroups.delete(&self.cg);
    }
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}

/// A host directory made a shared mount, unmounted on drop.
pub struct SharedMount(pub PathBuf);

impl SharedMount {
    pub fn new(path: &Path) -> SharedMount {
        use nix::mount::{MsFlags, mount};
        fs::create_dir_all(path).expect("dir");
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        let shared = SharedMount(path.to_path_buf());
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .expect("shared");
        shared
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0.join("sub"), nix::mount::MntFlags::MNT_DETACH);
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

pub struct ExecResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: String,
}

/// `yonggi exec` of `args` as `uid` in the container whose init is `pid`.
pub fn exec_in(case: &Case, pid: i32, args: &[&str], uid: u32) -> ExecResult {
    let mut process = oci_spec::runtime::Process::default();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    let mut user = oci_spec::runtime::User::default();
    user.set_uid(uid);
    user.set_gid(uid);
    process.set_user(user);
    let spec = yonggi::runtime::exec::ExecSpec {
        init_pid: pid,
        process,
        cgroup_dirs: Vec::new(),
        report: case.dir.path().join("exec-report.json"),
        seccomp: None,
    };
    let path = case.dir.path().join("exec.json");
    fs::write(&path, serde_json::to_vec(&spec).expect("json")).expect("exec spec");
    let out = std::process::Command::new(yonggi_bin())
        .arg("exec")
        .arg(&path)
        .output()
        .expect("yonggi exec");
    ExecResult {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        report: fs::read_to_string(&spec.report).expect("report"),
    }
}
