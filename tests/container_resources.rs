//! A container's namespaces, standard mounts, working directory and CPU
//! resources through the real daemon, checked from inside the container
//! and from the host's cgroup files.

mod container_support;
mod pod_support;
mod support;

use container_support::*;
use k8s_cri::v1 as cri;
use pod_support::*;
use tonic::Code;

async fn sh(e: &mut Env, id: &str, script: &str) -> String {
    let out = e.exec(id, &["sh", "-c", script], 0).await.expect("exec");
    assert_eq!(
        out.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_mounts_and_cpu_resources() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("ns").await;

    let mut a = e.container("a", &["sleep", "600"], &[]);
    a.working_dir = "/tmp".into();
    a.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let a = e.create(&pod, a).await.expect("create a");
    e.start(&a).await;
    let b = e.container("b", &["sleep", "600"], &[]);
    let b = e.create(&pod, b).await.expect("create b");
    e.start(&b).await;

    // The pod's network, IPC and UTS namespaces; their own mount and (with
    // container-level PID) PID namespaces.
    let ns = "for n in net ipc uts mnt pid; do readlink /proc/self/ns/$n; done";
    let in_a = sh(&mut e, &a, ns).await;
    let in_b = sh(&mut e, &b, ns).await;
    let (la, lb): (Vec<&str>, Vec<&str>) = (in_a.lines().collect(), in_b.lines().collect());
    assert_eq!(la.len(), 5, "{in_a}");
    assert_eq!(la[..3], lb[..3], "net, ipc, uts are the pod's");
    assert_ne!(la[3], lb[3], "own mount namespaces");
    assert_ne!(la[4], lb[4], "own PID namespaces");
    assert_eq!(
        sh(&mut e, &a, "cat /proc/1/cmdline | tr '\\0' ' '").await,
        "sleep 600"
    );

    // ExecSync keeps 16 MiB of each stream (CVE-2022-1708) and drains the
    // rest, so the command still ends normally.
    let mut big = e.rt.clone().max_decoding_message_size(64 << 20);
    let out = big
        .exec_sync(cri::ExecSyncRequest {
            container_id: a.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "head -c 17000000 /dev/zero; head -c 17000000 /dev/zero >&2".into(),
            ],
            timeout: 0,
        })
        .await
        .expect("exec")
        .into_inner();
    assert_eq!(out.exit_code, 0);
    assert_eq!((out.stdout.len(), out.stderr.len()), (16 << 20, 16 << 20));

    // Working dir; the pod's hostname files and /dev/shm; /sys and
    // /sys/fs/cgroup read-only.
    assert_eq!(sh(&mut e, &a, "pwd").await, "/tmp");
    assert_eq!(sh(&mut e, &a, "hostname").await, "ns");
    assert_eq!(sh(&mut e, &a, "cat /etc/hostname").await, "ns");
    sh(&mut e, &a, "echo shared > /dev/shm/x").await;
    assert_eq!(sh(&mut e, &b, "cat /dev/shm/x").await, "shared");
    let mounts = sh(&mut e, &a, "cat /proc/self/mounts").await;
    let opts = |target: &str| -> Option<String> {
        mounts
            .lines()
            .rfind(|l| l.split(' ').nth(1) == Some(target))
            .and_then(|l| l.split(' ').nth(3))
            .map(str::to_string)
    };
    for target in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/dev/shm",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
    ] {
        assert!(opts(target).is_some(), "{target} is not mounted:\n{mounts}");
    }
    for target in ["/sys", "/sys/fs/cgroup"] {
        let o = opts(target).unwrap_or_default();
        assert!(o.split(',').any(|x| x == "ro"), "{target}: {o}");
    }

    // CPU resources reach the cgroup, and an update changes them.
    let pid = ctr_info(&e.status(&a).await)["pid"].as_i64().expect("pid");
    let (cpu, v1) = cgroup_dir(pid, "cpu").expect("cpu controller");
    let (cpuset, _) = cgroup_dir(pid, "cpuset").expect("cpuset controller");
    if v1 {
        assert_eq!(read(&cpu, "cpu.shares"), "512");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    } else {
        assert_eq!(read(&cpu, "cpu.max"), "50000 100000");
    }
    let cpus = ["cpuset.cpus", "cpuset.cpus.effective"]
        .iter()
        .find_map(|f| std::fs::read_to_string(cpuset.join(f)).ok())
        .expect("cpuset file");
    assert_eq!(cpus.trim(), "0");
    e.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: a.clone(),
        linux: Some(cri::LinuxContainerResources {
            cpu_shares: 256,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update");
    if v1 {
        assert_eq!(read(&cpu, "cpu.shares"), "256");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "20000");
    } else {
        assert_eq!(read(&cpu, "cpu.max"), "20000 100000");
    }
    let status = e.status(&a).await.status.expect("status");
    let res = status
        .resources
        .and_then(|r| r.linux)
        .expect("linux resources");
    assert_eq!((res.cpu_shares, res.cpu_quota), (256, 20_000));

    // A create the kernel refuses late (a CPU this host lacks, written to
    // the new cgroup after the rootfs exists) leaves nothing and frees the
    // name.
    let snapshots = |e: &Env| {
        std::fs::read_dir(e.daemon.dir.path().join("root/snapshots/snapshots"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = snapshots(&e);
    assert!(before >= 2, "the running containers have rootfs dirs");
    let mut late = e.container("late", &["sleep", "600"], &[]);
    late.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpuset_cpus: "1023".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    e.create(&pod, late).await.expect_err("no CPU 1023 here");
    assert_eq!(snapshots(&e), before, "the refused create left a rootfs");
    let late = e.container("late", &["true"], &[]);
    let late = e.create(&pod, late).await.expect("the name is free again");
    e.remove(&late).await;

    // `unified` (cgroup v2 keys) applies on a pure v2 host only; elsewhere
    // it is refused and nothing is made.
    let pure_v2 = !std::path::Path::new("/sys/fs/cgroup/unified").exists()
        && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mut u = e.container("unified", &["sleep", "600"], &[]);
    u.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            unified: [("pids.max".to_string(), "42".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    match e.create(&pod, u).await {
        Ok(id) if pure_v2 => {
            e.start(&id).await;
            let pid = ctr_info(&e.status(&id).await)["pid"].as_i64().expect("pid");
            let (dir, _) = cgroup_dir(pid, "pids").expect("pids");
            assert_eq!(read(&dir, "pids.max"), "42");
            e.remove(&id).await;
        }
        Err(err) if !pure_v2 => assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}"),
        other => panic!("pure v2 {pure_v2}: {other:?}"),
    }

    // A pod-level PID namespace: its containers share it, under the pod's
    // holder as PID 1.
    let mut shared = config("pidpod");
    ns_options(&mut shared).pid = cri::NamespaceMode::Pod.into();
    shared.log_directory = e.logs.path().join("pidpod").display().to_string();
    shared.linux.as_mut().expect("linux").cgroup_parent =
        format!("/yonggi-test-{:08x}", rand::random::<u32>());
    let pidpod = run(&mut e.rt, shared)
        .await
        .expect("pod with a PID namespace");
    let mut ids = Vec::new();
    for name in ["p1", "p2"] {
        let id = e
            .create(&pidpod, e.container(name, &["sleep", "600"], &[]))
            .await
            .expect("create");
        e.start(&id).await;
        ids.push(id);
    }
    let p1 = sh(&mut e, &ids[0], "readlink /proc/self/ns/pid; ps -o args").await;
    let p2 = sh(&mut e, &ids[1], "readlink /proc/self/ns/pid").await;
    assert_eq!(p1.lines().next(), Some(p2.as_str()));
    assert_ne!(p2, la[4], "a pod namespace of its own");
    assert_eq!(
        p1.lines().filter(|l| l.starts_with("sleep 600")).count(),
        2,
        "each container sees the other: {p1}"
    );
    assert!(
        !sh(&mut e, &ids[0], "cat /proc/1/cmdline | tr '\\0' ' '")
            .await
            .starts_with("sleep"),
        "PID 1 is the pod's holder"
    );

    for p in [&pod, &pidpod] {
        stop(&mut e.rt, p).await;
        remove(&mut e.rt, p).await;
    }
    e.assert_gone(&a, &[pid]);
    e.assert_gone(&b, &[]);
    for id in &ids {
        e.assert_gone(id, &[]);
    }
}

/// Kubernetes' merge rules against an image with an entrypoint, env, a
/// working dir and a STOPSIGNAL, through the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_entrypoint_cmd_env_workdir_and_stop_signal() {
    use yonggi::testimages::layer::Compression;
    use yonggi::testimages::rootfs::busybox_layer;
    use yonggi::testimages::{Artifact, ImageBuilder, ImageConfig, TestImage};

    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let config = ImageConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo from-image-cmd".into()],
        env: vec![
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "FROM_IMAGE=img".into(),
            "OVERRIDE=img".into(),
        ],
        working_dir: "/etc".into(),
        stop_signal: Some("SIGUSR1".into()),
        ..ImageConfig::default()
    };
    let image = ImageBuilder::new(config)
        .layer(busybox_layer(Compression::Gzip).expect("layer"), "busybox")
        .build()
        .expect("image");
    let repository = "yonggi-test/entrypoint";
    e._registry
        .push(&[TestImage {
            repository: repository.into(),
            tags: vec!["latest".into()],
            artifact: Artifact::Image(image),
        }])
        .await;
    let reference = e._registry.reference(repository, "latest");
    e.daemon
        .images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull");
    let pod = e.pod("merge").await;
    let with_image = |e: &Env, name: &str, command: &[&str], args: &[&str]| {
        let mut c = e.container(name, command, args);
        c.image.as_mut().expect("image").image = reference.clone();
        c
    };

    let cases: [(&str, &[&str], &[&str], &str); 5] = [
        ("image", &[], &[], "from-image-cmd"),
        ("args", &[], &["echo args-replace-cmd"], "args-replace-cmd"),
        ("command", &["echo", "command-only"], &[], "command-only"),
        ("both", &["sh", "-c"], &["echo both"], "both"),
        (
            "env",
            &[],
            &["echo $FROM_IMAGE $OVERRIDE $(pwd)"],
            "img req /etc",
        ),
    ];
    for (name, command, args, want) in cases {
        let mut c = with_image(&e, name, command, args);
        c.envs = vec![cri::KeyValue {
            key: "OVERRIDE".into(),
            value: "req".into(),
        }];
        let (st, lines) = e.run_to_end(&pod, c).await;
        assert_eq!(st.exit_code, 0, "{name}");
        let text: Vec<String> = lines.into_iter().map(|l| l.content).collect();
        assert_eq!(text, vec![want.to_string()], "{name}");
    }

    // StopContainer sends the image's STOPSIGNAL first.
    let c = with_image(
        &e,
        "stopsignal",
        &[],
        &["trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done"],
    );
    let id = e.create(&pod, c).await.expect("create");
    e.start(&id).await;
    let log = e.log_file("merge", "stopsignal");
    support::engine::wait_for(&log, "ready");
    let t = std::time::Instant::now();
    e.stop(&id, 20).await;
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "waited for SIGKILL"
    );
    let st = e.status(&id).await.status.expect("status");
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    assert!(
        std::fs::read_to_string(&log)
            .expect("log")
            .contains("got-usr1")
    );
    e.remove(&id).await;

    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}
