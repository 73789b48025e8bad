//! Containers through the real daemon: images pulled from the test
//! registry, pods on a private network, and that nothing is left behind.

mod container_support;
mod pod_support;
mod support;

use std::time::{Duration, Instant};

use container_support::*;
use k8s_cri::v1 as cri;
use pod_support::*;
use support::engine::line;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_args_env_logs_and_exit_codes() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("cmd").await;

    // The image's Cmd is `sh` (no entrypoint): args replace it.
    let mut c = e.container("args", &[], &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    c.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "hi".into(),
    }];
    let (st, lines) = e.run_to_end(&pod, c).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    assert!(st.finished_at >= st.started_at && st.started_at >= st.created_at);
    // Two pipes: their relative order is the scheduler's.
    let mut lines = lines;
    lines.sort_by(|a, b| a.stream.cmp(&b.stream));
    assert_eq!(
        lines,
        vec![line("stderr", "F", "err"), line("stdout", "F", "out")]
    );

    let c = e.container(
        "command",
        &["/bin/sh", "-c", "echo $GREETING $PATH; printf partial"],
        &[],
    );
    let mut c2 = c.clone();
    c2.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "hello".into(),
    }];
    let (st, lines) = e.run_to_end(&pod, c2).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(st.reason, "Completed");
    assert_eq!(
        lines,
        vec![
            line(
                "stdout",
                "F",
                "hello /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ),
            line("stdout", "P", "partial"),
        ]
    );

    // A tty container: one stream, through a pty of its own devpts.
    let mut c3 = e.container("console", &["sh", "-c", "tty; echo err >&2"], &[]);
    c3.tty = true;
    let (st, lines) = e.run_to_end(&pod, c3).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    let lines: Vec<_> = lines
        .iter()
        .map(|l| (l.stream.as_str(), l.content.trim_end_matches('\r')))
        .collect();
    assert_eq!(lines, [("stdout", "/dev/pts/0"), ("stdout", "err")]);

    // Same name and attempt while the first exists: AlreadyExists naming it.
    let id = e.create(&pod, c.clone()).await.expect("create");
    let err = e.create(&pod, c.clone()).await.expect_err("duplicate name");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&id), "{}", err.message());
    // A created container removes cleanly, twice, and by prefix.
    e.remove(&id[..12]).await;
    e.remove(&id).await;
    e.assert_gone(&id, &[]);
    // The name is free again.
    let id = e.create(&pod, c).await.expect("create after remove");
    e.remove(&id).await;

    // Two running containers of one pod share its network namespace, and
    // each has its own mount and PID namespaces.
    let mut ids = Vec::new();
    for name in ["net-a", "net-b"] {
        let id = e
            .create(&pod, e.container(name, &["sleep", "600"], &[]))
            .await
            .expect("create");
        e.start(&id).await;
        ids.push(id);
    }
    let mut seen = Vec::new();
    for id in &ids {
        let out = e
            .exec(
                id,
                &[
                    "sh",
                    "-c",
                    "readlink /proc/self/ns/net; readlink /proc/self/ns/mnt",
                ],
                0,
            )
            .await
            .expect("exec");
        seen.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    let net = |s: &str| s.lines().next().unwrap_or_default().to_string();
    let mnt = |s: &str| s.lines().nth(1).unwrap_or_default().to_string();
    assert_eq!(net(&seen[0]), net(&seen[1]));
    assert!(net(&seen[0]).starts_with("net:["), "{seen:?}");
    assert_ne!(mnt(&seen[0]), mnt(&seen[1]));
    for id in &ids {
        e.remove(id).await;
    }

    // Port forwarding reaches 127.0.0.1:8080 inside the pod's netns.
    let server = e
        .create(
            &pod,
            e.container(
                "server",
                &[
                    "sh",
                    "-c",
                    "while true; do echo hello | nc -l -p 8080; done",
                ],
                &[],
            ),
        )
        .await
        .expect("create");
    e.start(&server).await;
    let local = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let mut forward = std::process::Command::new("crictl")
        .args([
            "--runtime-endpoint",
            &format!("unix://{}", e.daemon.socket.display()),
        ])
        .args(["port-forward", &pod, &format!("{local}:8080")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("crictl port-forward");
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        use std::io::Read;
        let mut text = String::new();
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.read_to_string(&mut text);
        }
        if text.contains("hello") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(got.trim(), "hello");
    e.remove(&server).await;

    // Unknown image: NotFound, nothing reserved.
    let mut bad = e.container("noimage", &["true"], &[]);
    bad.image.as_mut().expect("image").image = "127.0.0.1:1/none:latest".into();
    assert_eq!(
        e.create(&pod, bad).await.expect_err("no image").code(),
        Code::NotFound
    );
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_exec_stats_update_and_remove_running() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("run").await;
    let vol = tempfile::tempdir().expect("volume");
    std::fs::write(vol.path().join("data"), "from host\n").expect("data");
    let link = vol.path().with_extension("link");
    std::os::unix::fs::symlink(vol.path(), &link).expect("symlink");

    let mut c = e.container(
        "stubborn",
        &[
            "/bin/sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 1; done",
        ],
        &[],
    );
    c.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: link.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            oom_score_adj: -998,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = e.create(&pod, c).await.expect("create");
    e.start(&id).await;
    let st = e.status(&id).await;
    assert_eq!(
        st.status.as_ref().expect("status").state(),
        cri::ContainerState::ContainerRunning
    );
    let pid = ctr_info(&st)["pid"].as_i64().expect("pid");
    let monitor = ctr_info(&st)["monitorPid"].as_i64().expect("monitor pid");

    // ExecSync: output, exit code, the volume (read-only, through the symlink).
    let out = e.exec(&id, &["cat", "/vol/data"], 0).await.expect("exec");
    assert_eq!(out.stdout, b"from host\n");
    assert_eq!(out.exit_code, 0);
    let out = e
        .exec(&id, &["sh", "-c", "touch /vol/x; echo e >&2; exit 7"], 0)
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 7);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
    assert!(!vol.path().join("x").exists());
    // A timeout kills the command and all it started.
    let err = e
        .exec(&id, &["sh", "-c", "sleep 600 & sleep 601"], 1)
        .await
        .expect_err("timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let left = e
        .exec(
            &id,
            &["sh", "-c", "ps -o args | grep -c '^sleep 60[01]'"],
            0,
        )
        .await
        .expect("ps");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "0",
        "the timed-out command survives"
    );

    // Exec through the streaming server (crictl speaks it), no tty.
    let socket = format!("unix://{}", e.daemon.socket.display());
    let cid = id.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("crictl")
            .args([
                "--runtime-endpoint",
                &socket,
                "--timeout",
                "20s",
                "exec",
                &cid,
            ])
            .args(["sh", "-c", "cat /vol/data; echo err >&2; exit 3"])
            .output()
            .expect("crictl exec")
    })
    .await
    .expect("join");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from host\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    // crictl reports the command's exit code and exits 1 itself.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("command terminated with exit code 3"),
        "{out:?}"
    );

    // Stats, and UpdateContainerResources reaching the cgroup.
    let stats =
        e.rt.container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("stats")
        .into_inner()
        .stats
        .expect("stats");
    let cpu = stats
        .cpu
        .expect("cpu")
        .usage_core_nano_seconds
        .expect("cpu ns")
        .value;
    let mem = stats
        .memory
        .expect("mem")
        .working_set_bytes
        .expect("ws")
        .value;
    assert!(cpu > 0 && mem > 0, "cpu {cpu} mem {mem}");
    e.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update");
    let limit = e
        .exec(&id, &["sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"], 0)
        .await
        .expect("read limit");
    assert_eq!(
        String::from_utf8_lossy(&limit.stdout).trim(),
        (128u64 << 20).to_string()
    );
    // oom_score_adj below the daemon's own is raised, never refused.
    let adj: i64 = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .expect("oom_score_adj")
        .trim()
        .parse()
        .expect("number");
    assert!(adj >= 0 || adj == -998);

    // It ignores SIGTERM: the stop timeout ends in SIGKILL.
    let t = Instant::now();
    e.stop(&id, 2).await;
    assert!(t.elapsed() >= Duration::from_secs(2));
    let st = e.status(&id).await.status.expect("status");
    assert_eq!(st.state(), cri::ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 137);
    e.stop(&id, 2).await;
    e.remove(&id).await;
    e.assert_gone(&id, &[pid, monitor]);
    // Unknown ids: stop and remove succeed.
    e.stop(&id, 0).await;
    e.remove(&id).await;

    // A running container goes with its pod.
    let c = e.container("sleeper", &["sleep", "600"], &[]);
    let id = e.create(&pod, c).await.expect("create");
    e.start(&id).await;
    let st = e.status(&id).await;
    let pids = [
        ctr_info(&st)["pid"].as_i64().expect("pid"),
        ctr_info(&st)["monitorPid"].as_i64().expect("monitor"),
    ];
    stop(&mut e.rt, &pod).await;
    let st = e.status(&id).await.status.expect("status");
    assert_eq!(st.state(), cri::ContainerState::ContainerExited);
    remove(&mut e.rt, &pod).await;
    e.assert_gone(&id, &pids);
    std::fs::remove_file(&link).expect("unlink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_and_daemon_restart() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("oom").await;

    let mut c = e.container(
        "hog",
        &["/bin/sh", "-c", "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while true; do x=$x$x; done"],
        &[],
    );
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            memory_swap_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let (st, _) = e.run_to_end(&pod, c).await;
    assert_eq!(st.exit_code, 137);
    assert_eq!(st.reason, "OOMKilled");

    let long = e.container(
        "long",
        &["sh", "-c", "while true; do echo tick; sleep 0.1; done"],
        &[],
    );
    let long = e.create(&pod, long).await.expect("create");
    e.start(&long).await;
    let short = e.container("short", &["sh", "-c", "read x < /vol/go; exit 5"], &[]);
    let fifo_dir = tempfile::tempdir().expect("fifo dir");
    nix::unistd::mkfifo(
        &fifo_dir.path().join("go"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("fifo");
    let mut short = short;
    short.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: fifo_dir.path().display().to_string(),
        ..Default::default()
    }];
    let short = e.create(&pod, short).await.expect("create");
    e.start(&short).await;

    e.daemon.stop_with(nix::sys::signal::Signal::SIGKILL);
    // The short one exits while the daemon is away.
    std::fs::write(fifo_dir.path().join("go"), "go\n").expect("release it");
    std::thread::sleep(Duration::from_millis(500));
    e.daemon.spawn();
    e.rt = e.daemon.runtime().await;
    let st = e.status(&long).await.status.expect("status");
    assert_eq!(st.state(), cri::ContainerState::ContainerRunning);
    // Its log kept growing while the daemon was away, and still does; exec
    // reaches it.
    let log = std::path::PathBuf::from(&st.log_path);
    let ticks = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = ticks();
    assert!(before >= 3, "{before} log lines");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ticks() > before, "the log stopped growing");
    let out = e
        .exec(&long, &["echo", "still here"], 0)
        .await
        .expect("exec");
    assert_eq!(out.stdout, b"still here\n");
    let st = e.wait_exited(&short).await;
    assert_eq!(st.exit_code, 5);
    assert!(st.finished_at > st.started_at);
    let listed =
        e.rt.list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning.into(),
                }),
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("list")
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![long.clone()]
    );
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
    e.assert_gone(&long, &[]);
    e.assert_gone(&short, &[]);
}
