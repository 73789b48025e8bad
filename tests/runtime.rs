//! The container engine below the CRI: snapshot + runtime + monitor, driven
//! directly as root with a busybox rootfs. Each test checks it leaves no
//! mount and no process behind.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, Root, Spec,
};
use support::daemon::{require_root, yonggi_bin};
use yonggi::monitor::{self, ExitStatus, Launched, MonitorConfig};
use yonggi::snapshot::{Backend, Snapshotter};

const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

struct Case {
    dir: tempfile::TempDir,
    snapshots: Snapshotter,
    rootfs: PathBuf,
    state: PathBuf,
    log: PathBuf,
    pids: Vec<i32>,
}

impl Case {
    fn new() -> Case {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("yonggi-rt-")
            .tempdir()
            .expect("tempdir");
        let base = dir.path().join("layers/base");
        fs::create_dir_all(&base).expect("layer dir");
        support::rootfs::busybox(&base);
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

    fn spec(&self, args: &[&str]) -> Spec {
        let mut spec = Spec::default();
        spec.set_root(Some(Root::default()));
        if let Some(root) = spec.root_mut() {
            root.set_path(self.rootfs.clone());
        }
        spec.set_hostname(Some("yonggi-test".to_string()));
        let process = spec.process_mut().as_mut().expect("default process");
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        let caps = yonggi::runtime::default_capabilities();
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

    fn config(&self) -> MonitorConfig {
        MonitorConfig {
            log_path: self.log.clone(),
            ..MonitorConfig::default()
        }
    }

    fn launch(&mut self, spec: &Spec) -> Launched {
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
    fn run(&mut self, spec: &Spec) -> (ExitStatus, Vec<LogLine>) {
        self.launch(spec);
        monitor::start(&self.state).expect("start");
        let status = monitor::wait(&self.state).expect("wait");
        (status, log_lines(&self.log))
    }

    fn add_bind(spec: &mut Spec, source: &Path, dest: &str, options: &[&str]) {
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
    fn finish(mut self) {
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
fn wait_gone(pid: i32) {
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
struct LogLine {
    stream: String,
    tag: String,
    content: String,
}

fn log_lines(path: &Path) -> Vec<LogLine> {
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
fn assert_time(time: &str) {
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

fn line(stream: &str, tag: &str, content: &str) -> LogLine {
    LogLine {
        stream: stream.into(),
        tag: tag.into(),
        content: content.into(),
    }
}

#[test]
fn echo_hello_is_logged_in_cri_format_and_exits_0() {
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", "echo hello; echo oops >&2; printf tail"]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0);
    assert_eq!(status.signal, None);
    assert!(!status.oom_killed);
    let mut stdout: Vec<_> = lines.iter().filter(|l| l.stream == "stdout").collect();
    let stderr: Vec<_> = lines.iter().filter(|l| l.stream == "stderr").collect();
    assert_eq!(stderr, vec![&line("stderr", "F", "oops")]);
    stdout.sort_by_key(|l| l.tag.clone());
    assert_eq!(
        stdout,
        vec![&line("stdout", "F", "hello"), &line("stdout", "P", "tail")]
    );
    let finished = status.finished_at_ns;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    assert!(
        finished <= now && now - finished < 60_000_000_000,
        "finished {finished}, now {now}"
    );
    case.finish();
}

#[test]
fn exit_code_is_recorded() {
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", "exit 3"]);
    let (status, _) = case.run(&spec);
    assert_eq!(status.exit_code, 3);
    let recorded = monitor::read_exit(&case.state)
        .expect("read exit")
        .expect("exit file");
    assert_eq!(recorded, status);
    case.finish();
}

#[test]
fn long_lines_are_split_into_partial_chunks() {
    let mut case = Case::new();
    let spec = case.spec(&[
        "sh",
        "-c",
        "head -c 40000 /dev/zero | tr '\\0' a; echo; echo short",
    ]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0);
    let shape: Vec<_> = lines
        .iter()
        .map(|l| (l.tag.as_str(), l.content.len()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("P", 16384),
            ("P", 16384),
            ("F", 40000 - 2 * 16384),
            ("F", 5)
        ]
    );
    assert!(
        lines[..3]
            .iter()
            .all(|l| l.content.bytes().all(|b| b == b'a'))
    );
    case.finish();
}

#[test]
fn a_killed_container_exits_128_plus_the_signal() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let comm = fs::read_to_string(format!("/proc/{}/comm", launched.init_pid)).expect("init comm");
    assert_eq!(comm.trim(), "sleep");
    monitor::kill(&case.state, 9).expect("kill");
    let status = monitor::wait(&case.state).expect("wait");
    assert_eq!((status.exit_code, status.signal), (137, Some(9)));
    // Killing what has exited is not an error (stop is idempotent).
    monitor::kill(&case.state, 9).expect("kill again");
    case.finish();
}

#[test]
fn a_created_container_can_be_killed_before_start() {
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", "echo never"]);
    case.launch(&spec);
    monitor::kill(&case.state, 9).expect("kill");
    let status = monitor::wait(&case.state).expect("wait");
    assert_eq!(status.exit_code, 137);
    assert_eq!(fs::read_to_string(&case.log).expect("log"), "");
    case.finish();
}

#[test]
fn a_missing_program_fails_at_create_naming_the_step() {
    let mut case = Case::new();
    let spec = case.spec(&["no-such-program"]);
    let err = monitor::launch(
        &yonggi_bin(),
        &case.state,
        &spec,
        &case.config(),
        LAUNCH_TIMEOUT,
    )
    .expect_err("launch must fail");
    match err {
        monitor::MonitorError::Setup { step, message } => {
            assert_eq!(step, "exec");
            assert!(message.contains("no-such-program"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    if let Ok(pid) = fs::read_to_string(monitor::Paths::monitor_pid(&case.state)) {
        case.pids.push(pid.trim().parse().expect("pid"));
    }
    assert!(!monitor::Paths::control(&case.state).exists());
    case.finish();
}

#[test]
fn the_container_has_its_own_mounts_proc_dev_and_hostname() {
    let mut case = Case::new();
    let script = "echo pid=$$; hostname; \
        test -c /dev/null && echo devnull; test -L /dev/fd && echo devfd; \
        test -e /proc/self/status && echo proc; \
        touch /sys/x 2>/dev/null || echo sys-ro; \
        touch /sys/fs/cgroup/x 2>/dev/null || echo cgroup-ro; \
        ls /sys/fs/cgroup | head -1 | grep -q . && echo cgroup-listed; \
        test -e /dev/pts/ptmx && echo pts; \
        cat /etc/layer; cat /proc/self/mountinfo";
    let spec = case.spec(&["sh", "-c", script]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    assert_eq!(
        &out[..10],
        &[
            "pid=1",
            "yonggi-test",
            "devnull",
            "devfd",
            "proc",
            "sys-ro",
            "cgroup-ro",
            "cgroup-listed",
            "pts",
            "top",
        ]
    );
    // Its mount table: mount point -> (fs type, per-mount options).
    let mounts: std::collections::HashMap<&str, (&str, &str)> = out[10..]
        .iter()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<_> = left.split(' ').collect();
            Some((f[4], (right.split(' ').next()?, f[5])))
        })
        .collect();
    assert_eq!(mounts.get("/").map(|m| m.0), Some("overlay"), "{mounts:?}");
    assert_eq!(mounts.get("/proc").map(|m| m.0), Some("proc"));
    assert_eq!(mounts.get("/dev").map(|m| m.0), Some("tmpfs"));
    let sys = mounts.get("/sys").expect("/sys mounted");
    assert!(
        sys.0 == "sysfs" && sys.1.split(',').any(|o| o == "ro"),
        "{sys:?}"
    );
    // Nothing of the host's tree is visible: no mount point outside the
    // container's own, e.g. the host's test dir.
    let host_dir = case.dir.path().to_string_lossy().into_owned();
    assert!(
        mounts.keys().all(|m| !m.starts_with(&host_dir)),
        "{mounts:?}"
    );
    // The host's hostname is untouched.
    assert_ne!(nix::unistd::gethostname().expect("hostname"), "yonggi-test");
    case.finish();
}

#[test]
fn bind_mounts_honour_read_only_and_writes_reach_the_host() {
    let mut case = Case::new();
    let ro = case.dir.path().join("ro");
    let rw = case.dir.path().join("rw");
    fs::create_dir_all(&ro).expect("dir");
    fs::create_dir_all(&rw).expect("dir");
    fs::write(ro.join("f"), "from-host\n").expect("file");
    // A host path that is a symlink is resolved on the host.
    let link = case.dir.path().join("rw-link");
    std::os::unix::fs::symlink(&rw, &link).expect("symlink");
    let mut spec = case.spec(&[
        "sh",
        "-c",
        "cat /data/f; touch /data/x 2>/dev/null || echo ro-refused; \
         touch /rro/x 2>/dev/null || echo rro-refused; echo written > /rw/out",
    ]);
    Case::add_bind(&mut spec, &ro, "/data", &["rbind", "ro", "rprivate"]);
    Case::add_bind(&mut spec, &ro, "/rro", &["rbind", "rro", "rslave"]);
    Case::add_bind(&mut spec, &link, "/rw", &["rbind", "rw"]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    assert_eq!(out, vec!["from-host", "ro-refused", "rro-refused"]);
    assert_eq!(
        fs::read_to_string(rw.join("out")).expect("written"),
        "written\n"
    );
    assert!(!ro.join("x").exists());
    case.finish();
}

/// CVE-2021-30465 class: a symlink in the image at a mount target must be
/// resolved inside the rootfs, never on the host.
#[test]
fn a_symlinked_mount_target_stays_inside_the_rootfs() {
    let mut case = Case::new();
    let outside = case.dir.path().join("outside");
    fs::create_dir_all(&outside).expect("dir");
    // In the image: /escape -> <host path of `outside`>.
    std::os::unix::fs::symlink(&outside, case.rootfs.join("escape")).expect("symlink");
    let volume = case.dir.path().join("volume");
    fs::create_dir_all(&volume).expect("dir");
    fs::write(volume.join("f"), "volume\n").expect("file");
    let inside = format!("{}/landing/f", outside.display());
    let mut spec = case.spec(&["cat", inside.as_str()]);
    Case::add_bind(&mut spec, &volume, "/escape/landing", &["rbind"]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    assert_eq!(lines, vec![line("stdout", "F", "volume")]);
    assert!(
        !outside.join("landing").exists(),
        "the bind target was created on the host"
    );
    case.finish();
}

#[test]
fn the_monitor_outlives_its_launcher() {
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", "echo survived; exit 5"]);
    spec.save(monitor::Paths::spec(&case.state)).expect("spec");
    let config = serde_json::to_vec(&case.config()).expect("config");
    fs::write(monitor::Paths::config(&case.state), config).expect("config");
    let report = case.dir.path().join("report");
    // A short-lived launcher: the shell exits once the monitor detached.
    let launcher = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} monitor {} > {}",
            yonggi_bin().display(),
            case.state.display(),
            report.display()
        ))
        .status()
        .expect("launcher");
    assert!(launcher.success());
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    while !fs::read_to_string(&report)
        .unwrap_or_default()
        .ends_with('\n')
    {
        assert!(Instant::now() < deadline, "no report from the monitor");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid: i32 = fs::read_to_string(monitor::Paths::monitor_pid(&case.state))
        .expect("monitor pid")
        .trim()
        .parse()
        .expect("pid");
    case.pids.push(pid);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("monitor alive");
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .expect("ppid")
        .trim()
        .to_string();
    assert_ne!(ppid, std::process::id().to_string());
    monitor::start(&case.state).expect("start");
    let status = monitor::wait(&case.state).expect("wait");
    assert_eq!(status.exit_code, 5);
    assert_eq!(log_lines(&case.log), vec![line("stdout", "F", "survived")]);
    case.finish();
}

#[test]
fn the_log_is_reopened_after_a_rename() {
    let mut case = Case::new();
    let sync = case.dir.path().join("sync");
    fs::create_dir_all(&sync).expect("dir");
    let mut spec = case.spec(&[
        "sh",
        "-c",
        "echo one; while [ ! -e /sync/go ]; do sleep 0.05; done; echo two",
    ]);
    Case::add_bind(&mut spec, &sync, "/sync", &["rbind"]);
    case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&case.log)
        .unwrap_or_default()
        .contains("one")
    {
        assert!(Instant::now() < deadline, "no first line");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rotated = case.log.with_extension("log.1");
    fs::rename(&case.log, &rotated).expect("rotate");
    monitor::reopen_log(&case.state).expect("reopen");
    fs::write(sync.join("go"), "").expect("go");
    let status = monitor::wait(&case.state).expect("wait");
    assert_eq!(status.exit_code, 0);
    assert_eq!(log_lines(&rotated), vec![line("stdout", "F", "one")]);
    assert_eq!(log_lines(&case.log), vec![line("stdout", "F", "two")]);
    case.finish();
}

/// The monitor's memory while its container runs, printed for the report
/// (`cargo test --test runtime monitor_memory -- --nocapture`).
#[test]
fn monitor_memory() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let status =
        fs::read_to_string(format!("/proc/{}/status", launched.monitor_pid)).expect("status");
    let rollup =
        fs::read_to_string(format!("/proc/{}/smaps_rollup", launched.monitor_pid)).expect("smaps");
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("field")
    };
    let rss = field(&status, "VmRSS:");
    let pss = field(&rollup, "Pss:");
    println!(
        "monitor {}: VmRSS {rss} kB, Pss {pss} kB",
        launched.monitor_pid
    );
    assert!(rss > 0 && pss > 0);
    monitor::kill(&case.state, 9).expect("kill");
    monitor::wait(&case.state).expect("wait");
    case.finish();
}

/// Waits until `path` has `text`, the container's side of a handshake.
fn wait_for(path: &Path, text: &str) {
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

/// A pod's namespaces are joined by path: the second container shares the
/// first one's network, IPC and UTS namespaces (its hostname too).
#[test]
fn namespaces_given_by_path_are_joined() {
    let mut pod = Case::new();
    let mut spec = pod.spec(&["sleep", "1000"]);
    spec.set_hostname(Some("pod-host".to_string()));
    let holder = pod.launch(&spec);
    monitor::start(&pod.state).expect("start the holder");

    let mut case = Case::new();
    let mut spec = case.spec(&[
        "sh",
        "-c",
        "hostname; for n in net ipc pid; do readlink /proc/self/ns/$n; done",
    ]);
    spec.set_hostname(Some("ignored".to_string()));
    let linux = spec.linux_mut().as_mut().expect("linux");
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for ns in namespaces.iter_mut() {
        let name = match ns.typ() {
            LinuxNamespaceType::Network => "net",
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Uts => "uts",
            _ => continue,
        };
        ns.set_path(Some(PathBuf::from(format!(
            "/proc/{}/ns/{name}",
            holder.init_pid
        ))));
    }
    linux.set_namespaces(Some(namespaces));
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let ns = |name: &str| {
        fs::read_link(format!("/proc/{}/ns/{name}", holder.init_pid))
            .expect("holder ns")
            .display()
            .to_string()
    };
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    assert_eq!(
        out[..3],
        ["pod-host", ns("net").as_str(), ns("ipc").as_str()]
    );
    // Its PID namespace is its own.
    assert_ne!(out[3], ns("pid"));
    case.finish();
    monitor::kill(&pod.state, 9).expect("kill the holder");
    monitor::wait(&pod.state).expect("wait the holder");
    pod.finish();
}

#[test]
fn a_terminal_container_writes_through_a_pty() {
    let mut case = Case::new();
    let mut spec = case.spec(&[
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo on-a-tty; echo err >&2",
    ]);
    spec.process_mut()
        .as_mut()
        .expect("process")
        .set_terminal(Some(true));
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    // One stream; the pty turns "\n" into "\r\n".
    let out: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l.stream.as_str(),
                l.tag.as_str(),
                l.content.trim_end_matches('\r'),
            )
        })
        .collect();
    assert_eq!(
        out,
        vec![("stdout", "F", "on-a-tty"), ("stdout", "F", "err")]
    );
    case.finish();
}

/// A memory cgroup of the test's own (v1 here; the hybrid host has its
/// memory controller there), removed on drop.
struct MemoryCgroup(PathBuf);

impl MemoryCgroup {
    fn new(limit: u64) -> MemoryCgroup {
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/memory/yonggi-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        fs::create_dir(&dir).expect("create the test cgroup");
        let cg = MemoryCgroup(dir);
        fs::write(cg.0.join("memory.limit_in_bytes"), limit.to_string()).expect("limit");
        if cg.0.join("memory.memsw.limit_in_bytes").exists() {
            fs::write(cg.0.join("memory.memsw.limit_in_bytes"), limit.to_string()).expect("memsw");
        }
        cg
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}

/// The init joins the given cgroup; the container sees it as the root of
/// its /sys/fs/cgroup (cgroup namespace), and an OOM kill is recorded.
#[test]
fn the_cgroup_is_joined_and_an_oom_kill_is_recorded() {
    if !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        panic!("this test expects the v1 memory controller of the hybrid CI host");
    }
    let mut case = Case::new();
    let cgroup = MemoryCgroup::new(32 << 20);
    let spec = case.spec(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    let mut config = case.config();
    config.cgroup_dirs = vec![cgroup.0.clone()];
    config.oom_events = Some(cgroup.0.join("memory.oom_control"));
    let launched = monitor::launch(&yonggi_bin(), &case.state, &spec, &config, LAUNCH_TIMEOUT)
        .expect("launch");
    case.pids.extend([launched.monitor_pid, launched.init_pid]);
    let procs = fs::read_to_string(cgroup.0.join("cgroup.procs")).expect("procs");
    assert!(
        procs.lines().any(|p| p == launched.init_pid.to_string()),
        "{procs}"
    );
    monitor::start(&case.state).expect("start");
    let status = monitor::wait(&case.state).expect("wait");
    let lines = log_lines(&case.log);
    assert_eq!(lines.first().map(|l| l.content.as_str()), Some("33554432"));
    assert!(status.oom_killed, "{status:?} {lines:?}");
    assert_ne!(status.exit_code, 0);
    assert!(!lines.iter().any(|l| l.content == "survived"));
    case.finish();
}

/// A host directory made a shared mount, unmounted on drop.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(path: &Path) -> SharedMount {
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

/// rslave: a mount the host makes under the volume after start shows up
/// inside; rshared: one the container makes shows up on the host.
#[test]
fn rslave_and_rshared_propagation() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    for mode in ["rslave", "rshared"] {
        let mut case = Case::new();
        let volume = SharedMount::new(&case.dir.path().join("volume"));
        let sync = case.dir.path().join("sync");
        fs::create_dir_all(&sync).expect("dir");
        fs::create_dir_all(volume.0.join("sub")).expect("dir");
        let script = match mode {
            "rslave" => {
                "echo ready > /sync/state; \
                while [ ! -e /sync/go ]; do sleep 0.05; done; cat /vol/sub/marker"
            }
            _ => {
                "mount -t tmpfs tmpfs /vol/sub && echo from-container > /vol/sub/marker; \
                echo ready > /sync/state; while [ ! -e /sync/go ]; do sleep 0.05; done"
            }
        };
        let mut spec = case.spec(&["sh", "-c", script]);
        Case::add_bind(&mut spec, &volume.0, "/vol", &["rbind", mode]);
        Case::add_bind(&mut spec, &sync, "/sync", &["rbind"]);
        if mode == "rshared" {
            let linux = spec.linux_mut().as_mut().expect("linux");
            linux.set_rootfs_propagation(Some("rshared".to_string()));
            let process = spec.process_mut().as_mut().expect("process");
            let mut caps = yonggi::runtime::default_capabilities();
            caps.insert(oci_spec::runtime::Capability::SysAdmin);
            process.set_capabilities(Some(
                LinuxCapabilitiesBuilder::default()
                    .bounding(caps.clone())
                    .effective(caps.clone())
                    .permitted(caps)
                    .build()
                    .expect("caps"),
            ));
        }
        case.launch(&spec);
        monitor::start(&case.state).expect("start");
        wait_for(&sync.join("state"), "ready");
        if mode == "rslave" {
            let sub = volume.0.join("sub");
            mount(
                Some("tmpfs"),
                &sub,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .expect("host mount");
            fs::write(sub.join("marker"), "from-host\n").expect("marker");
        } else {
            let marker = fs::read_to_string(volume.0.join("sub/marker"));
            assert_eq!(marker.ok().as_deref(), Some("from-container\n"), "{mode}");
        }
        fs::write(sync.join("go"), "").expect("go");
        let status = monitor::wait(&case.state).expect("wait");
        assert_eq!(status.exit_code, 0, "{mode}: {:?}", log_lines(&case.log));
        if mode == "rslave" {
            assert_eq!(log_lines(&case.log), vec![line("stdout", "F", "from-host")]);
        }
        let _ = umount2(&volume.0.join("sub"), MntFlags::MNT_DETACH);
        drop(volume);
        case.finish();
    }
}

struct ExecResult {
    code: i32,
    stdout: String,
    stderr: String,
    report: String,
}

/// `yonggi exec` of `args` as `uid` in the container whose init is `pid`.
fn exec_in(case: &Case, pid: i32, args: &[&str], uid: u32) -> ExecResult {
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

#[test]
fn exec_runs_inside_the_running_container() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let r = exec_in(
        &case,
        launched.init_pid,
        &[
            "sh",
            "-c",
            "echo $$; hostname; cat /etc/layer; id -u; echo err >&2; exit 7",
        ],
        65534,
    );
    assert_eq!(r.code, 7, "{}{}{}", r.stdout, r.stderr, r.report);
    let out: Vec<_> = r.stdout.lines().collect();
    // A small pid: it is in the container's PID namespace.
    let pid: u32 = out[0].parse().expect("pid");
    assert!(pid > 1 && pid < 100, "{pid}");
    assert_eq!(&out[1..], ["yonggi-test", "top", "65534"]);
    assert_eq!(r.stderr, "err\n");
    assert_eq!(r.report, "");

    let r = exec_in(&case, launched.init_pid, &["no-such-program"], 0);
    assert_eq!(r.code, i32::from(yonggi::runtime::exec::SETUP_FAILED));
    let err: yonggi::runtime::SetupError = serde_json::from_str(&r.report).expect("report");
    assert_eq!(err.step, "exec");
    assert!(err.message.contains("no-such-program"), "{err:?}");

    monitor::kill(&case.state, 9).expect("kill");
    monitor::wait(&case.state).expect("wait");
    case.finish();
}

/// SIGTERM to the helper (an ExecSync timeout) kills the command and
/// everything it started in its session.
#[test]
fn a_stopped_exec_leaves_nothing_behind() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let mut process = oci_spec::runtime::Process::default();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "sleep 1000 & sleep 1000".into(),
    ]));
    let exec = yonggi::runtime::exec::ExecSpec {
        init_pid: launched.init_pid,
        process,
        cgroup_dirs: Vec::new(),
        report: case.dir.path().join("exec-report.json"),
    };
    let path = case.dir.path().join("exec.json");
    fs::write(&path, serde_json::to_vec(&exec).expect("json")).expect("exec spec");
    let mut helper = std::process::Command::new(yonggi_bin())
        .arg("exec")
        .arg(&path)
        .spawn()
        .expect("yonggi exec");
    let pid_ns = fs::read_link(format!("/proc/{}/ns/pid", launched.init_pid)).expect("ns");
    let in_container = || -> Vec<i32> {
        fs::read_dir("/proc")
            .expect("proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() == Some(&pid_ns)
            })
            // A killed orphan stays a zombie under an init that does not
            // reap (sleep here): dead all the same.
            .filter(|pid| {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                !status.contains("State:\tZ")
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // init, the background sleep, and the shell (or the sleep it exec'd into)
    while in_container().len() < 3 {
        assert!(Instant::now() < deadline, "the exec never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop the exec");
    let status = helper.wait().expect("helper");
    assert_eq!(status.code(), Some(128 + 9));
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_container() != vec![launched.init_pid] {
        let left: Vec<String> = in_container()
            .iter()
            .map(|p| {
                fs::read_to_string(format!("/proc/{p}/status"))
                    .unwrap_or_default()
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    monitor::kill(&case.state, 9).expect("kill");
    monitor::wait(&case.state).expect("wait");
    case.finish();
}
