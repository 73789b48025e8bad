//! The cgroup layer against the real kernel (run as root): whatever this
//! host is (v1, hybrid or v2), limits must be accepted and read back, real
//! processes moved in, counted, OOM-killed, killed, and every directory the
//! test made removed again. Each test works under its own random top-level
//! cgroup and touches nothing else.

mod support;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use yonggi::runtime::cgroup::{
    CgroupPath, Cgroups, DEFAULT_ROOT, Driver, HugepageLimit, Mode, Resources, shares_to_weight,
};

/// Kills what a test started and removes the cgroups it made, even when
/// an assertion failed half-way.
struct Cleanup {
    cgroups: Cgroups,
    made: Vec<yonggi::runtime::cgroup::Cgroup>,
    children: Vec<Child>,
    top: String,
}

impl Cleanup {
    fn new(top: String) -> Cleanup {
        support::daemon::require_root();
        Cleanup {
            cgroups: Cgroups::detect().expect("detect cgroups"),
            made: Vec::new(),
            children: Vec::new(),
            top,
        }
    }

    /// Every directory named `top` under any hierarchy of the host.
    fn leftovers(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(DEFAULT_ROOT)
            .expect("cgroup root")
            .flatten()
        {
            let p = entry.path();
            if p.join(&self.top).exists() {
                out.push(p.join(&self.top));
            }
            if p.file_name().is_some_and(|n| n == self.top.as_str()) {
                out.push(p);
            }
        }
        out
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for cg in self.made.iter().rev() {
            let _ = self.cgroups.kill_all(cg, Duration::from_secs(5));
            let _ = self.cgroups.delete(cg);
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The directory of `cg` in the hierarchy that holds controller `name`.
fn controller_dir(cgroups: &Cgroups, name: &str, cg: &CgroupPath) -> PathBuf {
    let root = cgroups.root();
    let rel = cg.as_str().trim_start_matches('/');
    match cgroups.mode() {
        Mode::V2 => root.join(rel),
        Mode::V1 | Mode::Hybrid => {
            // A co-mounted controller (cpu,cpuacct) has a symlink by name.
            root.join(name).join(rel)
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn limits_processes_stats_kill_and_delete_on_this_host() {
    let top = unique("yonggi-test-");
    let mut t = Cleanup::new(top.clone());
    let cgroups = t.cgroups.clone();
    let pod_path = Driver::Cgroupfs
        .pod_cgroup(&format!("/{top}/burstable/pod1"))
        .expect("pod path");
    let pod = cgroups.create(&pod_path).expect("create pod cgroup");
    t.made.push(pod.clone());
    let ctr_path = Driver::Cgroupfs
        .container_cgroup(&pod_path, "c0ffee")
        .expect("container path");
    let ctr = cgroups.create(&ctr_path).expect("create container cgroup");
    t.made.push(ctr.clone());
    assert!(cgroups.exists(&ctr));

    let mut res = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(20_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0".into()),
        memory_limit: Some(64 << 20),
        pids_limit: Some(32),
        ..Default::default()
    };
    // Every size the kernel offers, at 0, as kubelet sends them.
    for size in ["2048kB", "1048576kB"] {
        if std::path::Path::new(&format!("/sys/kernel/mm/hugepages/hugepages-{size}")).exists() {
            let page_size = if size == "2048kB" { "2MB" } else { "1GB" };
            res.hugepage_limits.push(HugepageLimit {
                page_size: page_size.into(),
                limit: 0,
            });
        }
    }
    cgroups.apply(&ctr, &res).expect("apply resources");

    // The kernel took every value.
    let cpu = controller_dir(&cgroups, "cpu", &ctr_path);
    let mem = controller_dir(&cgroups, "memory", &ctr_path);
    let pids = controller_dir(&cgroups, "pids", &ctr_path);
    let cpuset = controller_dir(&cgroups, "cpuset", &ctr_path);
    if cgroups.mode() == Mode::V2 {
        assert_eq!(
            read(cpu.join("cpu.weight")),
            shares_to_weight(512).to_string()
        );
        assert_eq!(read(cpu.join("cpu.max")), "20000 100000");
        assert_eq!(read(mem.join("memory.max")), (64u64 << 20).to_string());
    } else {
        assert_eq!(read(cpu.join("cpu.shares")), "512");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "20000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
    }
    assert_eq!(read(pids.join("pids.max")), "32");
    assert_eq!(read(cpuset.join("cpuset.cpus")), "0");

    // An update changes a running cgroup.
    let update = Resources {
        memory_limit: Some(128 << 20),
        cpu_quota: Some(-1),
        ..Default::default()
    };
    cgroups.apply(&ctr, &update).expect("update resources");
    if cgroups.mode() == Mode::V2 {
        assert_eq!(read(mem.join("memory.max")), (128u64 << 20).to_string());
        assert_eq!(read(cpu.join("cpu.max")), "max 100000");
    } else {
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (128u64 << 20).to_string()
        );
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "-1");
    }
    // cgroup v2 settings are refused off v2, and accepted on v2.
    let unified = Resources {
        unified: [("pids.max".to_string(), "31".to_string())].into(),
        ..Default::default()
    };
    match cgroups.mode() {
        Mode::V2 => {
            cgroups.apply(&ctr, &unified).expect("unified on v2");
            assert_eq!(read(pids.join("pids.max")), "31");
        }
        _ => assert!(cgroups.apply(&ctr, &unified).is_err()),
    }

    // A real process: moved in, it works (CPU, memory) and forks inside.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; \
             for n in 1 2 3; do sleep 1000 & done; wait",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let pid = i32::try_from(child.id()).expect("pid");
    let mut stdin = child.stdin.take().expect("stdin");
    t.children.push(child);
    cgroups.add_process(&ctr, pid).expect("add process");
    let proc_cgroup = read(PathBuf::from(format!("/proc/{pid}/cgroup")));
    assert!(
        proc_cgroup.contains(ctr_path.as_str()),
        "{pid} is not in {ctr_path}: {proc_cgroup}"
    );
    stdin.write_all(b"go\n").expect("start the child");
    wait_until("the shell and its three sleeps", || {
        cgroups.pids(&ctr).map(|p| p.len()).unwrap_or(0) == 4
    });
    // The pod cgroup sees its container's processes too.
    assert!(cgroups.pids(&pod).expect("pod pids").contains(&pid));

    let stats = cgroups.stats(&ctr).expect("stats");
    assert!(stats.cpu_usage_ns > 0, "{stats:?}");
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    assert!(stats.memory_working_set_bytes <= stats.memory_usage_bytes);
    assert_eq!(stats.memory_limit_bytes, Some(128 << 20));
    assert_eq!(stats.pids, 4);
    assert_eq!(stats.oom_kills, 0);

    // Killing the pod kills the container's processes.
    cgroups
        .kill_all(&pod, Duration::from_secs(10))
        .expect("kill all");
    assert!(cgroups.pids(&pod).expect("pids").is_empty());
    let status = t.children[0].wait().expect("wait sh");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    t.children.clear();

    cgroups.delete(&ctr).expect("delete container cgroup");
    cgroups.delete(&pod).expect("delete pod cgroup");
    assert!(!cgroups.exists(&pod));
    assert_eq!(t.leftovers(), Vec::<PathBuf>::new());
    // Deleting again is fine.
    cgroups.delete(&pod).expect("delete twice");
    t.made.clear();
}

#[test]
fn an_oom_kill_is_counted() {
    let top = unique("yonggi-test-");
    let mut t = Cleanup::new(top.clone());
    let cgroups = t.cgroups.clone();
    let path = CgroupPath::parse(&format!("/{top}/oom")).expect("path");
    let cg = cgroups.create(&path).expect("create");
    t.made.push(cg.clone());
    let res = Resources {
        memory_limit: Some(16 << 20),
        // No swap to escape to, on hosts that have swap.
        memory_swap: Some(16 << 20),
        ..Default::default()
    };
    cgroups.apply(&cg, &res).expect("apply");

    // `tail -n 1` keeps the current line in memory, and /dev/zero has no
    // newline: 256 MiB of it cannot fit.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; head -c 268435456 /dev/zero | tail -n 1 >/dev/null",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = i32::try_from(child.id()).expect("pid");
    let mut stdin = child.stdin.take().expect("stdin");
    t.children.push(child);
    cgroups.add_process(&cg, pid).expect("add");
    stdin.write_all(b"go\n").expect("go");
    let status = t.children[0].wait().expect("wait");
    t.children.clear();
    assert!(!status.success(), "allocating past the limit succeeded");
    assert!(cgroups.oom_kills(&cg).expect("oom kills") >= 1);
    assert_eq!(
        cgroups.stats(&cg).expect("stats").oom_kills,
        cgroups.oom_kills(&cg).expect("oom kills")
    );

    cgroups
        .kill_all(&cg, Duration::from_secs(10))
        .expect("kill");
    cgroups.delete(&cg).expect("delete");
    assert_eq!(t.leftovers(), Vec::<PathBuf>::new());
    t.made.clear();
}

#[test]
fn systemd_names_become_nested_directories() {
    // No `-` in the random part: each `-` of a slice name is a level.
    let top_slice = unique("yonggitest");
    let mut t = Cleanup::new(format!("{top_slice}.slice"));
    let cgroups = t.cgroups.clone();
    let pod_path = Driver::Systemd
        .pod_cgroup(&format!("{top_slice}-pod1.slice"))
        .expect("slice");
    let ctr_path = Driver::Systemd
        .container_cgroup(&pod_path, "abc")
        .expect("scope");
    assert_eq!(
        ctr_path.as_str(),
        format!("/{top_slice}.slice/{top_slice}-pod1.slice/yonggi-abc.scope")
    );
    let ctr = cgroups.create(&ctr_path).expect("create");
    t.made.push(ctr.clone());
    let mem = controller_dir(&cgroups, "memory", &ctr_path);
    assert!(mem.is_dir(), "{} missing", mem.display());
    cgroups.delete(&ctr).expect("delete");
    assert_eq!(t.leftovers(), Vec::<PathBuf>::new());
    t.made.clear();
}
