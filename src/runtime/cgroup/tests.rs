//! Unit tests against a fake cgroupfs (see `testfs.rs`) for v1, v2 and
//! hybrid hosts: which files a call touches, in which order, with what.
//! The real kernel is exercised by `tests/cgroups.rs`.

use std::path::Path;
use std::time::Duration;

use super::testfs::{FakeFs, put};
use super::*;

fn host(kind: &str) -> (tempfile::TempDir, FakeFs, Cgroups) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeFs::new(dir.path());
    match kind {
        "v2" => fake.layout_v2("cpuset cpu io memory hugetlb pids rdma misc"),
        "v1" => fake.layout_v1(false),
        "hybrid" => fake.layout_v1(true),
        other => panic!("unknown host kind {other}"),
    }
    let cgroups = Cgroups::with_fs(Box::new(fake.clone()), dir.path()).expect("detect");
    (dir, fake, cgroups)
}

fn path(p: &str) -> CgroupPath {
    CgroupPath::parse(p).expect("cgroup path")
}

fn log(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

#[test]
fn detects_each_kind_of_host() {
    let (_d, _f, v2) = host("v2");
    assert_eq!(v2.mode(), Mode::V2);
    assert!(v2.supports_clone_into());
    let (_d, _f, v1) = host("v1");
    assert_eq!(v1.mode(), Mode::V1);
    assert!(!v1.supports_clone_into());
    let (d, _f, hybrid) = host("hybrid");
    assert_eq!(hybrid.mode(), Mode::Hybrid);
    let layout = &hybrid.inner.layout;
    assert_eq!(
        layout.location(Controller::Memory),
        Some(Location::V1(d.path().join("memory")))
    );
    assert_eq!(
        layout.location(Controller::Cpuacct),
        Some(Location::V1(d.path().join("cpu,cpuacct")))
    );
    // hugetlb only in the unified hierarchy, as on the test machine.
    assert_eq!(layout.location(Controller::Hugetlb), Some(Location::V2));
    // The name=systemd hierarchy is not one of ours.
    assert!(!layout.mounts().contains(&d.path().join("systemd")));

    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Cgroups::detect_at(empty.path()),
        Err(CgroupError::NoHierarchy(_))
    ));
}

#[test]
fn v2_create_enables_controllers_down_to_the_parent() {
    let (d, fake, cg) = host("v2");
    let c = cg.create(&path("/kubepods/pod1/ctr")).expect("create");
    assert!(d.path().join("kubepods/pod1/ctr").is_dir());
    let enable = "+cpu +cpuset +memory +pids +hugetlb +io";
    assert_eq!(
        fake.take_log(),
        log(&[
            ("cgroup.subtree_control", enable),
            ("kubepods/cgroup.subtree_control", enable),
            ("kubepods/pod1/cgroup.subtree_control", enable),
        ])
    );
    assert_eq!(c.created.len(), 3);
    // Idempotent, and enabling is not repeated.
    let again = cg
        .create(&path("/kubepods/pod1/ctr"))
        .expect("create again");
    assert!(again.created.is_empty());
    assert!(fake.take_log().is_empty());
    assert!(cg.clone_into_fd(&c).expect("fd").is_some());
}

#[test]
fn v1_create_makes_every_hierarchy_and_inherits_cpusets() {
    let (d, fake, cg) = host("v1");
    let c = cg.create(&path("/yonggi/pod/ctr")).expect("create");
    for m in [
        "cpu,cpuacct",
        "cpuset",
        "memory",
        "pids",
        "freezer",
        "devices",
        "hugetlb",
    ] {
        assert!(d.path().join(m).join("yonggi/pod/ctr").is_dir(), "{m}");
    }
    assert!(!d.path().join("systemd/yonggi").exists());
    assert_eq!(c.created.len(), 21);
    let cpuset_writes: Vec<_> = fake
        .take_log()
        .into_iter()
        .filter(|(f, _)| f.starts_with("cpuset/"))
        .collect();
    assert_eq!(
        cpuset_writes,
        log(&[
            ("cpuset/yonggi/cpuset.cpus", "0-1"),
            ("cpuset/yonggi/cpuset.mems", "0"),
            ("cpuset/yonggi/pod/cpuset.cpus", "0-1"),
            ("cpuset/yonggi/pod/cpuset.mems", "0"),
            ("cpuset/yonggi/pod/ctr/cpuset.cpus", "0-1"),
            ("cpuset/yonggi/pod/ctr/cpuset.mems", "0"),
        ])
    );
    assert!(cg.clone_into_fd(&c).expect("fd").is_none());
}

#[test]
fn create_rolls_back_on_failure() {
    let (d, _fake, cg) = host("v1");
    // An empty parent cpuset cannot be inherited: the copy fails on read.
    std::fs::remove_file(d.path().join("cpuset/cpuset.mems")).expect("rm");
    assert!(cg.create(&path("/a/b")).is_err());
    for m in ["cpu,cpuacct", "cpuset", "memory", "pids"] {
        assert!(!d.path().join(m).join("a").exists(), "{m} left behind");
    }
}

#[test]
fn create_walks_again_when_a_shared_parent_vanishes() {
    let (d, fake, cg) = host("v1");
    cg.create(&path("/shared")).expect("shared parent");
    let mem = d.path().join("memory");
    fake.vanish_parent_of(&mem.join("shared/pod"));
    let pod = cg
        .create(&path("/shared/pod"))
        .expect("create after the race");
    assert!(mem.join("shared/pod").is_dir());
    // The parent re-made here is now this cgroup's to remove.
    assert!(pod.created.contains(&mem.join("shared")));
    let cpuset = std::fs::read_to_string(d.path().join("cpuset/shared/pod/cpuset.cpus"));
    assert_eq!(cpuset.expect("cpuset").trim(), "0-1");
}

fn full_resources() -> Resources {
    Resources {
        cpu_shares: Some(1024),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0-1".into()),
        cpuset_mems: Some("0".into()),
        memory_limit: Some(64 << 20),
        memory_swap: Some(96 << 20),
        pids_limit: Some(100),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 0,
        }],
        devices: None,
        unified: Default::default(),
    }
}

#[test]
fn v2_apply_writes_v2_files() {
    let (_d, fake, cg) = host("v2");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    fake.take_log();
    cg.apply(&c, &full_resources()).expect("apply");
    assert_eq!(
        fake.take_log(),
        log(&[
            ("pod/ctr/cpu.weight", "39"),
            ("pod/ctr/cpu.max", "50000 100000"),
            ("pod/ctr/cpuset.cpus", "0-1"),
            ("pod/ctr/cpuset.mems", "0"),
            ("pod/ctr/memory.max", "67108864"),
            ("pod/ctr/memory.swap.max", "33554432"),
            ("pod/ctr/pids.max", "100"),
            ("pod/ctr/hugetlb.2MB.max", "0"),
        ])
    );
    // A file the kernel does not have is reported by its key.
    assert!(matches!(
        cg.apply(
            &c,
            &Resources {
                unified: [("memory.nosuch".to_string(), "1".to_string())].into(),
                ..Default::default()
            }
        ),
        Err(CgroupError::UnknownUnifiedKey { .. })
    ));
    let update = Resources {
        cpu_quota: Some(-1),
        memory_limit: Some(-1),
        pids_limit: Some(0),
        ..Default::default()
    };
    fake.take_log();
    cg.apply(&c, &update).expect("update");
    assert_eq!(
        fake.take_log(),
        log(&[
            ("pod/ctr/cpu.max", "max"),
            ("pod/ctr/memory.max", "max"),
            ("pod/ctr/pids.max", "max"),
        ])
    );
}

#[test]
fn v2_unified_keys_are_written_last() {
    let (d, fake, cg) = host("v2");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    put(&d.path().join("pod/ctr"), "memory.high", "max");
    fake.take_log();
    let res = Resources {
        memory_limit: Some(64 << 20),
        unified: [("memory.high".to_string(), "50331648".to_string())].into(),
        ..Default::default()
    };
    cg.apply(&c, &res).expect("apply");
    assert_eq!(
        fake.take_log(),
        log(&[
            ("pod/ctr/memory.max", "67108864"),
            ("pod/ctr/memory.high", "50331648"),
        ])
    );
}

#[test]
fn v1_apply_writes_v1_files_in_a_safe_order() {
    let (_d, fake, cg) = host("v1");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    fake.take_log();
    cg.apply(&c, &full_resources()).expect("apply");
    // Limits grow from "unlimited", so memory then memsw... no: memsw
    // (96M) is below the current memory limit (unlimited), so memory first.
    assert_eq!(
        fake.take_log(),
        log(&[
            ("cpu,cpuacct/pod/ctr/cpu.shares", "1024"),
            ("cpu,cpuacct/pod/ctr/cpu.cfs_period_us", "100000"),
            ("cpu,cpuacct/pod/ctr/cpu.cfs_quota_us", "50000"),
            ("cpuset/pod/ctr/cpuset.cpus", "0-1"),
            ("cpuset/pod/ctr/cpuset.mems", "0"),
            ("memory/pod/ctr/memory.limit_in_bytes", "67108864"),
            ("memory/pod/ctr/memory.memsw.limit_in_bytes", "100663296"),
            ("pids/pod/ctr/pids.max", "100"),
            ("hugetlb/pod/ctr/hugetlb.2MB.limit_in_bytes", "0"),
        ])
    );
    // Raising both above the current memory limit: memsw must go first.
    let grow = Resources {
        memory_limit: Some(128 << 20),
        memory_swap: Some(256 << 20),
        ..Default::default()
    };
    cg.apply(&c, &grow).expect("grow");
    assert_eq!(
        fake.take_log(),
        log(&[
            ("memory/pod/ctr/memory.memsw.limit_in_bytes", "268435456"),
            ("memory/pod/ctr/memory.limit_in_bytes", "134217728"),
        ])
    );
    // Lifting the memory limit lifts memsw too, memsw first.
    let lift = Resources {
        memory_limit: Some(-1),
        cpu_quota: Some(-1),
        ..Default::default()
    };
    cg.apply(&c, &lift).expect("lift");
    assert_eq!(
        fake.take_log(),
        log(&[
            ("cpu,cpuacct/pod/ctr/cpu.cfs_quota_us", "-1"),
            ("memory/pod/ctr/memory.memsw.limit_in_bytes", "-1"),
            ("memory/pod/ctr/memory.limit_in_bytes", "-1"),
        ])
    );
}

#[test]
fn v1_without_swap_accounting_accepts_only_no_extra_swap() {
    let (d, fake, cg) = host("v1");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    std::fs::remove_file(d.path().join("memory/pod/ctr/memory.memsw.limit_in_bytes")).expect("rm");
    fake.take_log();
    let same = Resources {
        memory_limit: Some(64 << 20),
        memory_swap: Some(64 << 20),
        ..Default::default()
    };
    cg.apply(&c, &same).expect("no extra swap");
    assert_eq!(
        fake.take_log(),
        log(&[("memory/pod/ctr/memory.limit_in_bytes", "67108864")])
    );
    let more = Resources {
        memory_limit: Some(64 << 20),
        memory_swap: Some(128 << 20),
        ..Default::default()
    };
    assert!(matches!(
        cg.apply(&c, &more),
        Err(CgroupError::SwapUnsupported)
    ));
}

#[test]
fn v1_devices_are_written_rule_by_rule() {
    for kind in ["v1", "hybrid"] {
        let (_d, fake, cg) = host(kind);
        let c = cg.create(&path("/pod/ctr")).expect("create");
        fake.take_log();
        let res = Resources {
            devices: Some(default_device_rules()[..4].to_vec()),
            ..Default::default()
        };
        cg.apply(&c, &res).expect("apply");
        assert_eq!(
            fake.take_log(),
            log(&[
                ("devices/pod/ctr/devices.deny", "a *:* rwm"),
                ("devices/pod/ctr/devices.allow", "c *:* m"),
                ("devices/pod/ctr/devices.allow", "b *:* m"),
                ("devices/pod/ctr/devices.allow", "c 1:3 rwm"),
            ]),
            "{kind}"
        );
    }
}

#[test]
fn unified_is_refused_off_v2_and_changes_nothing() {
    for kind in ["v1", "hybrid"] {
        let (_d, fake, cg) = host(kind);
        let c = cg.create(&path("/pod/ctr")).expect("create");
        fake.take_log();
        let mut res = full_resources();
        res.unified = [("memory.high".to_string(), "1".to_string())].into();
        assert!(
            matches!(
                cg.apply(&c, &res),
                Err(CgroupError::UnifiedUnsupported { ref key, .. }) if key == "memory.high"
            ),
            "{kind}"
        );
        assert!(fake.take_log().is_empty(), "{kind} wrote something");
    }
}

#[test]
fn errors_say_whose_fault_they_are() {
    let (_d, _fake, cg) = host("v1");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    let unified = Resources {
        unified: [("memory.high".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let err = cg.apply(&c, &unified).expect_err("unified on v1");
    assert_eq!(err.fault(), Fault::Unsupported);
    let bad = Resources {
        cpu_period: Some(1),
        ..Default::default()
    };
    assert_eq!(cg.apply(&c, &bad).expect_err("bad").fault(), Fault::Input);
    assert_eq!(
        CgroupPath::parse("/a/..").expect_err("bad path").fault(),
        Fault::Input
    );
    let refused = CgroupError::Write {
        path: "cpuset.cpus".into(),
        value: "7".into(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    };
    assert_eq!(refused.fault(), Fault::Input);
    let busy = CgroupError::Remove {
        path: "x".into(),
        source: std::io::Error::from_raw_os_error(libc::EBUSY),
    };
    assert_eq!(busy.fault(), Fault::Host);
}

#[test]
fn create_with_leaves_nothing_when_a_value_is_refused() {
    let (d, _fake, cg) = host("v2");
    // Refused before anything is made.
    let bad = Resources {
        cpu_period: Some(1),
        ..Default::default()
    };
    assert!(cg.create_with(&path("/p/c"), &bad).is_err());
    assert!(!d.path().join("p").exists());
    // Refused by the "kernel" (a hugepage size the host lacks): undone.
    let mut res = full_resources();
    res.hugepage_limits[0].page_size = "16GB".into();
    assert!(matches!(
        cg.create_with(&path("/p/c"), &res),
        Err(CgroupError::UnsupportedPageSize { .. })
    ));
    assert!(!d.path().join("p").exists());
    let ok = cg
        .create_with(&path("/p/c"), &full_resources())
        .expect("create_with");
    assert_eq!(
        std::fs::read_to_string(d.path().join("p/c/pids.max")).expect("pids.max"),
        "100"
    );
    cg.delete(&ok).expect("delete");
    assert!(!d.path().join("p").exists());
}

#[test]
fn bad_input_changes_nothing() {
    let (_d, fake, cg) = host("v2");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    fake.take_log();
    let mut res = full_resources();
    res.cpuset_mems = Some("zero".into());
    assert!(matches!(
        cg.apply(&c, &res),
        Err(CgroupError::InvalidResource { .. })
    ));
    assert!(fake.take_log().is_empty());

    // What the host lacks is found before the first write too.
    let mut res = full_resources();
    res.unified = [("memory.nosuch".to_string(), "1".to_string())].into();
    assert!(matches!(
        cg.apply(&c, &res),
        Err(CgroupError::UnknownUnifiedKey { .. })
    ));
    let mut res = full_resources();
    res.hugepage_limits[0].page_size = "16GB".into();
    assert!(matches!(
        cg.apply(&c, &res),
        Err(CgroupError::UnsupportedPageSize { .. })
    ));
    assert!(fake.take_log().is_empty());

    let (d, fake, cg) = host("v1");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    std::fs::remove_file(d.path().join("memory/pod/ctr/memory.memsw.limit_in_bytes")).expect("rm");
    fake.take_log();
    assert!(matches!(
        cg.apply(&c, &full_resources()),
        Err(CgroupError::SwapUnsupported)
    ));
    assert!(fake.take_log().is_empty());
}

#[test]
fn hybrid_uses_v1_for_resources_and_unified_for_hugetlb() {
    let (_d, fake, cg) = host("hybrid");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    // hugetlb lives only in the unified hierarchy here, so it is enabled
    // there on the way down, as on a pure v2 host.
    let unified: Vec<_> = fake
        .take_log()
        .into_iter()
        .filter(|(f, _)| f.starts_with("unified/"))
        .collect();
    assert_eq!(
        unified,
        log(&[
            ("unified/cgroup.subtree_control", "+hugetlb"),
            ("unified/pod/cgroup.subtree_control", "+hugetlb"),
        ])
    );
    cg.apply(&c, &full_resources()).expect("apply");
    let files: Vec<String> = fake.take_log().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        files,
        [
            "cpu,cpuacct/pod/ctr/cpu.shares",
            "cpu,cpuacct/pod/ctr/cpu.cfs_period_us",
            "cpu,cpuacct/pod/ctr/cpu.cfs_quota_us",
            "cpuset/pod/ctr/cpuset.cpus",
            "cpuset/pod/ctr/cpuset.mems",
            "memory/pod/ctr/memory.limit_in_bytes",
            "memory/pod/ctr/memory.memsw.limit_in_bytes",
            "pids/pod/ctr/pids.max",
            "unified/pod/ctr/hugetlb.2MB.max",
        ]
    );
    let mut res = full_resources();
    res.hugepage_limits[0].page_size = "16GB".into();
    assert!(matches!(
        cg.apply(&c, &res),
        Err(CgroupError::UnsupportedPageSize { .. })
    ));
}

#[test]
fn missing_controller_is_reported_before_writing() {
    let (_d, fake, cg) = host("v2");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    fake.take_log();
    // A v2 host without the pids controller.
    let d2 = tempfile::tempdir().expect("tempdir");
    let f2 = FakeFs::new(d2.path());
    f2.layout_v2("cpu memory");
    let cg2 = Cgroups::with_fs(Box::new(f2.clone()), d2.path()).expect("detect");
    let c2 = cg2.create(&path("/pod/ctr")).expect("create");
    f2.take_log();
    let res = Resources {
        memory_limit: Some(64 << 20),
        pids_limit: Some(10),
        ..Default::default()
    };
    assert!(matches!(
        cg2.apply(&c2, &res),
        Err(CgroupError::ControllerUnavailable(Controller::Pids))
    ));
    assert!(f2.take_log().is_empty());
    cg.apply(&c, &res).expect("the full host has pids");
}

#[test]
fn stats_follow_kubelets_formulas() {
    let (d, _fake, cg) = host("v2");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    let dir = d.path().join("pod/ctr");
    put(
        &dir,
        "cpu.stat",
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    );
    put(&dir, "memory.current", "10000000");
    put(
        &dir,
        "memory.stat",
        "anon 4000000\nfile 6000000\ninactive_file 2500000\npgfault 77\npgmajfault 3\n",
    );
    put(&dir, "memory.max", "67108864");
    put(
        &dir,
        "memory.events",
        "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n",
    );
    put(&dir, "pids.current", "3");
    let s = cg.stats(&c).expect("stats");
    assert_eq!(
        s,
        Stats {
            cpu_usage_ns: 1_500_000,
            memory_usage_bytes: 10_000_000,
            memory_working_set_bytes: 7_500_000,
            memory_rss_bytes: 4_000_000,
            memory_limit_bytes: Some(67_108_864),
            page_faults: 77,
            major_page_faults: 3,
            swap_usage_bytes: 0,
            pids: 3,
            oom_kills: 1,
        }
    );
    assert_eq!(cg.oom_kills(&c).expect("oom"), 1);

    let (d, _fake, cg) = host("v1");
    let c = cg.create(&path("/pod/ctr")).expect("create");
    let mem = d.path().join("memory/pod/ctr");
    put(
        &d.path().join("cpu,cpuacct/pod/ctr"),
        "cpuacct.usage",
        "123456789",
    );
    put(&mem, "memory.usage_in_bytes", "8000000");
    put(&mem, "memory.memsw.usage_in_bytes", "8100000");
    put(
        &mem,
        "memory.stat",
        "cache 1\nrss 2\ninactive_file 9\ntotal_rss 3000000\ntotal_inactive_file 9000000\ntotal_pgfault 5\ntotal_pgmajfault 1\n",
    );
    put(
        &mem,
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    put(&d.path().join("pids/pod/ctr"), "pids.current", "1");
    let s = cg.stats(&c).expect("stats");
    assert_eq!(s.cpu_usage_ns, 123_456_789);
    // inactive_file above usage clamps the working set at zero, as kubelet does.
    assert_eq!(s.memory_working_set_bytes, 0);
    assert_eq!(s.memory_rss_bytes, 3_000_000);
    assert_eq!(s.memory_limit_bytes, None);
    assert_eq!(s.swap_usage_bytes, 100_000);
    assert_eq!((s.page_faults, s.major_page_faults), (5, 1));
    assert_eq!((s.pids, s.oom_kills), (1, 2));
    assert_eq!(cg.oom_kills(&c).expect("oom"), 2);
}

#[test]
fn pids_are_listed_recursively_and_killed_through_cgroup_kill() {
    let (d, fake, cg) = host("v2");
    let pod = cg.create(&path("/pod")).expect("pod");
    cg.create(&path("/pod/a")).expect("a");
    // Pids that are only text here, above any pid_max (2^22): should a
    // signal be sent by mistake, it reaches no real process.
    put(
        &d.path().join("pod/a"),
        "cgroup.procs",
        "5000001\n5000002\n",
    );
    let mut pids = cg.pids(&pod).expect("pids");
    pids.sort();
    assert_eq!(pids, [5000001, 5000002]);
    fake.take_log();
    cg.kill_all(&pod, Duration::from_secs(5)).expect("kill");
    assert_eq!(fake.take_log(), log(&[("pod/cgroup.kill", "1")]));
    assert!(cg.pids(&pod).expect("pids").is_empty());

    put(&d.path().join("pod/a"), "cgroup.procs", "0\n");
    assert!(matches!(cg.pids(&pod), Err(CgroupError::Parse { .. })));
}

#[test]
fn delete_removes_what_was_created_and_keeps_shared_parents() {
    let (d, _fake, cg) = host("v1");
    // A parent that existed before: never removed.
    cg.create(&path("/kubepods")).expect("kubepods");
    let a = cg.create(&path("/kubepods/pod/a")).expect("a");
    let b = cg.create(&path("/kubepods/pod/b")).expect("b");
    cg.delete(&a).expect("delete a");
    let mem = d.path().join("memory");
    assert!(!mem.join("kubepods/pod/a").exists());
    // `pod` was created with `a` but `b` still lives in it.
    assert!(mem.join("kubepods/pod/b").is_dir());
    cg.delete(&b).expect("delete b");
    assert!(mem.join("kubepods/pod").exists(), "b did not create pod");
    cg.delete(&Cgroup::existing(path("/kubepods/pod")))
        .expect("pod");
    assert!(!mem.join("kubepods/pod").exists());
    assert!(mem.join("kubepods").is_dir());
    // Idempotent.
    cg.delete(&a).expect("again");
    // A cgroup with processes is not removed.
    let busy = cg.create(&path("/kubepods/busy")).expect("busy");
    put(&mem.join("kubepods/busy"), "cgroup.procs", "5000003\n");
    assert!(matches!(cg.delete(&busy), Err(CgroupError::Remove { .. })));
}

#[test]
fn delete_ignores_recorded_dirs_outside_the_hierarchies() {
    let (d, _fake, cg) = host("v2");
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("empty");
    std::fs::create_dir(&victim).expect("mkdir");
    // Looks like an empty cgroup, so only the guard keeps it.
    put(&victim, "cgroup.procs", "");
    let forged = format!(
        r#"{{"path":"/x","created":[{:?},{:?}]}}"#,
        victim.display().to_string(),
        d.path().display().to_string()
    );
    let record: Cgroup = serde_json::from_str(&forged).expect("record");
    cg.delete(&record).expect("delete");
    assert!(victim.is_dir(), "removed a directory outside the hierarchy");
    assert!(d.path().is_dir());
}

#[test]
fn cgroup_records_round_trip_through_json() {
    let (_d, _fake, cg) = host("hybrid");
    let c = cg.create(&path("/kubepods.slice/x.slice")).expect("create");
    let json = serde_json::to_string(&c).expect("json");
    let back: Cgroup = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, c);
    assert!(serde_json::from_str::<Cgroup>(r#"{"path":"/a/../b"}"#).is_err());
    assert!(Path::new(back.path().as_str()).is_absolute());
}

#[test]
fn a_shared_parent_goes_with_its_last_child_only() {
    let (d, _fake, cg) = host("hybrid");
    let parent = path("/yonggi-default");
    let a = cg.create(&path("/yonggi-default/a")).expect("a");
    let b = cg.create(&path("/yonggi-default/b")).expect("b");
    cg.delete(&a).expect("delete a");
    cg.remove_if_unused(&parent).expect("in use");
    assert!(d.path().join("memory/yonggi-default/b").is_dir());
    cg.delete(&b).expect("delete b");
    cg.remove_if_unused(&parent).expect("unused");
    for m in ["memory", "cpuset", "unified"] {
        assert!(!d.path().join(m).join("yonggi-default").exists(), "{m}");
    }
    cg.remove_if_unused(&parent).expect("again");
}
