//! Root tests of code paths this host cannot show through plain
//! detection, on the real kernel: a hybrid host viewed without its unified
//! hierarchy is exactly a v1 host, and its unified hierarchy alone takes
//! device programs as a pure v2 host does.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

fn v1_view() -> Option<Cgroups> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (cgroups); run the suite as root, as CI does"
    );
    let host = Cgroups::detect().expect("detect");
    if host.mode() == Mode::V2 {
        eprintln!("pure v2 host: the v1 paths cannot be exercised here");
        return None;
    }
    let mut layout = host.inner.layout.clone();
    layout.unified = None;
    layout.v2_controllers.clear();
    layout.mode = Mode::V1;
    Some(Cgroups {
        inner: Arc::new(Inner {
            fs: Box::new(HostFs),
            layout,
        }),
    })
}

/// Runs `cat /dev/null` in `cg` and tells whether it could open it.
fn can_read_dev_null(cgroups: &Cgroups, cg: &Cgroup) -> bool {
    use std::io::Write;
    let mut child = Command::new("sh")
        .args(["-c", "read go; exec cat /dev/null"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = i32::try_from(child.id()).expect("pid");
    let added = cgroups.add_process(cg, pid);
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(b"go\n");
    }
    let status = child.wait().expect("wait");
    added.expect("add process");
    status.success()
}

fn deny_dev_null() -> Resources {
    let mut rules = vec![DeviceRule {
        allow: true,
        kind: DeviceKind::All,
        major: None,
        minor: None,
        access: Access::ALL,
    }];
    rules.push(DeviceRule {
        allow: false,
        kind: DeviceKind::Char,
        major: Some(1),
        minor: Some(3),
        access: Access::READ,
    });
    Resources {
        devices: Some(rules),
        ..Default::default()
    }
}

fn check_device_rules(cgroups: &Cgroups) {
    let path =
        CgroupPath::parse(&format!("/yonggi-test-{:016x}", rand::random::<u64>())).expect("path");
    let cg = cgroups.create(&path).expect("create");
    let result = (|| {
        let open = can_read_dev_null(cgroups, &cg);
        cgroups.apply(&cg, &deny_dev_null())?;
        let denied = !can_read_dev_null(cgroups, &cg);
        // The defaults allow /dev/null; an update replaces the rules.
        let defaults = Resources {
            devices: Some(default_device_rules()),
            ..Default::default()
        };
        cgroups.apply(&cg, &defaults)?;
        let allowed_again = can_read_dev_null(cgroups, &cg);
        Ok::<_, CgroupError>((open, denied, allowed_again))
    })();
    let _ = cgroups.kill_all(&cg, Duration::from_secs(5));
    let deleted = cgroups.delete(&cg);
    let (open, denied, allowed_again) = result.expect("device rules");
    assert!(open, "/dev/null unreadable before any rule");
    assert!(denied, "the deny rule did not hold");
    assert!(allowed_again, "the update did not replace the rules");
    deleted.expect("delete");
}

#[test]
fn v1_device_rules_hold() {
    let Some(cgroups) = v1_view() else { return };
    check_device_rules(&cgroups);
}

/// The unified hierarchy of a hybrid host takes device programs as a
/// pure v2 host does: the kernel asks the program of a task's cgroup2
/// cgroup in both setups.
#[test]
fn v2_device_program_holds() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let host = Cgroups::detect().expect("detect");
    if host.inner.layout.unified.is_none() {
        eprintln!("pure v1 host: no cgroup2 hierarchy to attach device programs to");
        return;
    }
    let mut layout = host.inner.layout.clone();
    layout.v1.clear();
    layout.mode = Mode::V2;
    let cgroups = Cgroups {
        inner: Arc::new(Inner {
            fs: Box::new(HostFs),
            layout,
        }),
    };
    check_device_rules(&cgroups);
}

#[test]
fn freezer_kill_catches_a_forking_shell() {
    let Some(cgroups) = v1_view() else { return };
    assert!(
        matches!(
            cgroups.inner.layout.location(Controller::Freezer),
            Some(Location::V1(_))
        ),
        "this v1 host has no freezer"
    );
    let path =
        CgroupPath::parse(&format!("/yonggi-test-{:016x}", rand::random::<u64>())).expect("path");
    let cg = cgroups.create(&path).expect("create");
    let limits = Resources {
        pids_limit: Some(500),
        ..Default::default()
    };
    cgroups.apply(&cg, &limits).expect("pids limit");
    // Forks as fast as it can, likely still forking when the kill starts;
    // stays below the pids limit, as dash exits when a fork fails.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; i=0; while [ $i -lt 300 ]; do sleep 100 & i=$((i+1)); done; wait",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = i32::try_from(child.id()).expect("pid");
    let result = (|| {
        cgroups.add_process(&cg, pid)?;
        use std::io::Write;
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
        }
        let start = Instant::now();
        while cgroups.pids(&cg)?.len() < 20 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = cgroups.pids(&cg)?.len();
        cgroups.kill_all(&cg, Duration::from_secs(10))?;
        // Never left frozen: a later exec or kill would hang.
        if let Some(Location::V1(freezer)) = cgroups.inner.layout.location(Controller::Freezer) {
            let state = freezer.join(path.relative()).join("freezer.state");
            assert_eq!(
                std::fs::read_to_string(state).expect("state").trim(),
                "THAWED"
            );
        }
        Ok::<usize, CgroupError>(before)
    })();
    let _ = child.kill();
    let status = child.wait().expect("wait");
    let left = cgroups.pids(&cg).expect("pids");
    let _ = cgroups.kill_all(&cg, Duration::from_secs(5));
    let deleted = cgroups.delete(&cg);
    let before = result.expect("kill all");
    assert!(before >= 20, "only {before} processes were started");
    assert!(left.is_empty(), "{left:?} survived");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    deleted.expect("delete");
    for mount in cgroups.inner.layout.mounts() {
        assert!(!mount.join(path.relative()).exists());
    }
}

#[test]
fn stats_and_limits_read_back_through_v1_files() {
    let Some(cgroups) = v1_view() else { return };
    let path =
        CgroupPath::parse(&format!("/yonggi-test-{:016x}/c", rand::random::<u64>())).expect("path");
    let cg = cgroups.create(&path).expect("create");
    let res = Resources {
        cpu_shares: Some(256),
        memory_limit: Some(32 << 20),
        memory_swap: Some(32 << 20),
        ..Default::default()
    };
    let applied = cgroups.apply(&cg, &res);
    let stats = cgroups.stats(&cg);
    let deleted = cgroups.delete(&cg);
    applied.expect("apply");
    let stats = stats.expect("stats");
    assert_eq!(stats.memory_limit_bytes, Some(32 << 20));
    assert_eq!((stats.pids, stats.oom_kills), (0, 0));
    deleted.expect("delete");
    let top = path.lineage()[0].clone();
    for mount in cgroups.inner.layout.mounts() {
        assert!(!mount.join(top.relative()).exists(), "{}", mount.display());
    }
}
