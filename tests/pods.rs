//! Pod sandboxes through the real daemon: namespaces, files, sysctls, the PID
//! namespace holder, restart recovery, and that nothing is left behind.

mod pod_support;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use k8s_cri::v1 as cri;
use nix::sys::signal::Signal;
use pod_support::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_stop_remove_twice_each() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;

    let mut c = config("web-0");
    c.labels = HashMap::from([
        ("app".into(), "web".into()),
        ("tier".into(), "front".into()),
    ]);
    c.annotations = HashMap::from([("note".into(), "kept exactly: ünïcode =,;".into())]);
    c.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
        searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    c.linux.as_mut().expect("linux").cgroup_parent = "/kubepods/podtest".into();
    *sysctls(&mut c) = HashMap::from([
        ("kernel.shm_rmid_forced".into(), "1".into()),
        ("fs.mqueue.msg_max".into(), "37".into()),
        ("net.ipv4.ip_unprivileged_port_start".into(), "81".into()),
    ]);
    let meta = c.metadata.clone().expect("metadata");
    let id = run(&mut rt, c).await.expect("RunPodSandbox");
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|ch| ch.is_ascii_hexdigit()));

    // Any unique prefix resolves.
    let st = status(&mut rt, &id[..8]).await.expect("status by prefix");
    let s = st.status.clone().expect("status");
    assert_eq!(s.id, id);
    assert_eq!(s.metadata, Some(meta.clone()));
    assert_eq!(s.state(), cri::PodSandboxState::SandboxReady);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    assert!(
        s.created_at > now - 60_000_000_000 && s.created_at <= now,
        "created_at in ns"
    );
    assert_eq!(s.labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(s.labels.len(), 2);
    assert_eq!(
        s.annotations.get("note").map(String::as_str),
        Some("kept exactly: ünïcode =,;")
    );
    assert_eq!(s.runtime_handler, "");
    let ns = s
        .linux
        .expect("linux")
        .namespaces
        .expect("ns")
        .options
        .expect("options");
    assert_eq!(ns.network(), cri::NamespaceMode::Pod);
    assert_eq!(ns.ipc(), cri::NamespaceMode::Pod);
    assert_eq!(ns.pid(), cri::NamespaceMode::Container);

    // Files and namespaces, seen from inside.
    let netns = info_path(&st, "netNamespace").expect("netns path");
    let uts = info_path(&st, "utsNamespace").expect("uts path");
    let ipc = info_path(&st, "ipcNamespace").expect("ipc path");
    assert!(netns.starts_with(pods_dir(&daemon).join(&id)));
    let hostname = std::fs::read_to_string(info_path(&st, "hostname").expect("hostname file"))
        .expect("read hostname");
    assert_eq!(hostname, "web-0\n");
    let uts_arg = format!("--uts={}", uts.display());
    assert_eq!(nsenter(&[&uts_arg, "hostname"]), "web-0");
    let resolv = std::fs::read_to_string(info_path(&st, "resolvConf").expect("resolv"))
        .expect("read resolv.conf");
    assert_eq!(
        resolv,
        "search ns.svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5\n"
    );
    let hosts = std::fs::read_to_string(info_path(&st, "hosts").expect("hosts")).expect("hosts");
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");
    let ipc_arg = format!("--ipc={}", ipc.display());
    let net_arg = format!("--net={}", netns.display());
    assert_eq!(
        nsenter(&[&ipc_arg, "cat", "/proc/sys/kernel/shm_rmid_forced"]),
        "1"
    );
    assert_eq!(
        nsenter(&[&ipc_arg, "cat", "/proc/sys/fs/mqueue/msg_max"]),
        "37"
    );
    assert_eq!(
        nsenter(&[
            &net_arg,
            "cat",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start"
        ]),
        "81"
    );
    // The host kept its own values.
    let host_port_start =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").expect("host");
    assert_ne!(host_port_start.trim(), "81");
    // The pod netns has its loopback up and the CNI interface.
    let links = nsenter(&[&net_arg, "ip", "-o", "link", "show"]);
    assert!(links.contains("lo: <LOOPBACK,UP"), "{links}");
    assert!(links.contains("eth0@"), "{links}");
    let shm = info_path(&st, "shm").expect("shm path");
    let shm_mounts = mountinfo_mentions(&format!("{} ", shm.display()));
    assert_eq!(shm_mounts.len(), 1, "shm mounted once");
    assert!(
        shm_mounts[0].contains(" - tmpfs ") && shm_mounts[0].contains("size=65536k"),
        "a 64M tmpfs: {}",
        shm_mounts[0]
    );
    // Every thread of the daemon stayed in the host's namespaces.
    let host_net = inode(Path::new("/proc/self/ns/net"));
    for task in std::fs::read_dir(format!("/proc/{}/task", daemon.pid())).expect("tasks") {
        let task = task.expect("task").path();
        assert_eq!(inode(&task.join("ns/net")), host_net, "{}", task.display());
    }
    assert_ne!(inode(&netns), host_net);

    stop(&mut rt, &id).await;
    stop(&mut rt, &id).await;
    let st = status(&mut rt, &id).await.expect("status after stop");
    let s = st.status.expect("status");
    assert_eq!(s.state(), cri::PodSandboxState::SandboxNotready);
    assert_eq!(s.metadata, Some(meta));
    assert_eq!(
        mountinfo_mentions(&id),
        Vec::<String>::new(),
        "stop unmounts all"
    );

    remove(&mut rt, &id).await;
    remove(&mut rt, &id).await;
    let err = status(&mut rt, &id).await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    assert!(list(&mut rt, None).await.is_empty());
    assert_gone(&daemon, &id, None);

    // Unknown ids: stop and remove succeed.
    let unknown = "f".repeat(64);
    stop(&mut rt, &unknown).await;
    remove(&mut rt, &unknown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_prefixes() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let mut ids = Vec::new();
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let mut c = config(name);
        c.labels = HashMap::from([("app".into(), app.into()), ("name".into(), name.into())]);
        ids.push(run(&mut rt, c).await.expect("run"));
    }
    stop(&mut rt, &ids[1]).await;

    let by_label = |k: &str, v: &str| cri::PodSandboxFilter {
        label_selector: HashMap::from([(k.to_string(), v.to_string())]),
        ..Default::default()
    };
    let mut web: Vec<String> = list(&mut rt, Some(by_label("app", "web")))
        .await
        .into_iter()
        .map(|p| p.id)
        .collect();
    web.sort();
    let mut want = vec![ids[0].clone(), ids[1].clone()];
    want.sort();
    assert_eq!(web, want);
    let ready = list(
        &mut rt,
        Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady.into(),
            }),
            label_selector: HashMap::from([("app".into(), "web".into())]),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].id, ids[0]);
    assert_eq!(ready[0].labels.get("name").map(String::as_str), Some("a"));
    let by_id = list(
        &mut rt,
        Some(cri::PodSandboxFilter {
            id: ids[2][..12].to_string(),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].id, ids[2]);
    assert!(
        list(&mut rt, Some(by_label("app", "nope")))
            .await
            .is_empty()
    );
    assert_eq!(list(&mut rt, None).await.len(), 3);

    for id in &ids {
        remove(&mut rt, id).await;
        assert_gone(&daemon, id, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_is_reserved_until_removed() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let c = config("reserved");
    let id = run(&mut rt, c.clone()).await.expect("first run");
    let err = run(&mut rt, c.clone()).await.expect_err("same name twice");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&id), "{}", err.message());
    stop(&mut rt, &id).await;
    let err = run(&mut rt, c.clone())
        .await
        .expect_err("stopped still holds it");
    assert_eq!(err.code(), Code::AlreadyExists);
    remove(&mut rt, &id).await;
    let again = run(&mut rt, c).await.expect("free after remove");
    assert_ne!(again, id);
    remove(&mut rt, &again).await;
    assert_gone(&daemon, &again, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sysctls_are_refused_and_leave_nothing() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let panic_before = std::fs::read_to_string("/proc/sys/kernel/panic").expect("panic");

    let mut c = config("bad-sysctl");
    *sysctls(&mut c) = HashMap::from([("kernel.panic".into(), "7".into())]);
    let err = run(&mut rt, c.clone()).await.expect_err("kernel.panic");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kernel.panic"), "{}", err.message());

    let mut host_net = c.clone();
    ns_options(&mut host_net).network = cri::NamespaceMode::Node.into();
    *sysctls(&mut host_net) = HashMap::from([("net.ipv4.ip_forward".into(), "1".into())]);
    let err = run(&mut rt, host_net)
        .await
        .expect_err("net sysctl on host net");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("net.ipv4.ip_forward"),
        "{}",
        err.message()
    );

    // Namespaced but unknown to the kernel: refused after the namespaces were
    // made, so this exercises the rollback.
    let mut unknown = c.clone();
    ns_options(&mut unknown).pid = cri::NamespaceMode::Pod.into();
    *sysctls(&mut unknown) = HashMap::from([("net.ipv4.no_such_knob".into(), "1".into())]);
    let err = run(&mut rt, unknown).await.expect_err("unknown sysctl");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("net.ipv4.no_such_knob"),
        "{}",
        err.message()
    );

    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/panic").expect("panic"),
        panic_before
    );
    assert!(list(&mut rt, None).await.is_empty());
    let left: Vec<_> = std::fs::read_dir(pods_dir(&daemon))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        mountinfo_mentions(&pods_dir(&daemon).display().to_string()),
        Vec::<String>::new()
    );

    // The name was released: the same pod without the bad sysctl runs.
    *sysctls(&mut c) = HashMap::new();
    let id = run(&mut rt, c).await.expect("name released");
    remove(&mut rt, &id).await;
    assert_gone(&daemon, &id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_handlers_come_from_the_config() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "[runtime_handlers.fast]\n");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let handlers: Vec<String> = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .runtime_handlers
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(handlers, vec![String::new(), "fast".to_string()]);
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config("h1")),
            runtime_handler: "kata-nope".into(),
        })
        .await
        .expect_err("unknown handler");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("kata-nope"), "{}", err.message());
    let id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config("h2")),
            runtime_handler: "fast".into(),
        })
        .await
        .expect("configured handler")
        .into_inner()
        .pod_sandbox_id;
    let s = status(&mut rt, &id)
        .await
        .expect("status")
        .status
        .expect("status");
    assert_eq!(s.runtime_handler, "fast");
    assert_eq!(list(&mut rt, None).await[0].runtime_handler, "fast");
    remove(&mut rt, &id).await;
    assert_gone(&daemon, &id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pod_shares_the_node_network_and_name() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let mut c = config("hostnet");
    c.hostname = String::new();
    ns_options(&mut c).network = cri::NamespaceMode::Node.into();
    // With a pod PID namespace, the holder shows what the pod's processes see.
    ns_options(&mut c).pid = cri::NamespaceMode::Pod.into();
    *sysctls(&mut c) = HashMap::from([("kernel.shm_rmid_forced".into(), "1".into())]);
    let id = run(&mut rt, c).await.expect("host-network pod");
    let st = status(&mut rt, &id).await.expect("status");
    let opts = st
        .status
        .clone()
        .expect("s")
        .linux
        .expect("l")
        .namespaces
        .expect("n")
        .options
        .expect("o");
    assert_eq!(opts.network(), cri::NamespaceMode::Node);
    assert!(info_path(&st, "netNamespace").is_none());
    assert!(info_path(&st, "utsNamespace").is_none());
    let pid = info(&st)["pid"].as_i64().expect("holder pid");
    let pid_arg = pid.to_string();
    // Its network namespace is the host's (other tests add and remove links
    // meanwhile, so compare namespaces, then look for the host's uplink).
    assert_eq!(
        inode(Path::new(&format!("/proc/{pid}/ns/net"))),
        inode(Path::new("/proc/self/ns/net"))
    );
    let route = Command::new("ip")
        .args(["-o", "route", "show", "default"])
        .output()
        .expect("ip route");
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    let uplink = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or("lo")
        .to_string();
    let seen = nsenter(&["-t", &pid_arg, "-n", "ip", "-o", "link", "show", &uplink]);
    assert!(seen.contains(&format!(": {uplink}")), "{seen}");
    let host_name = nix::unistd::gethostname().expect("hostname");
    assert_eq!(
        nsenter(&["-t", &pid_arg, "-u", "hostname"]),
        host_name.to_string_lossy()
    );
    let file = std::fs::read_to_string(info_path(&st, "hostname").expect("hostname file"))
        .expect("hostname");
    assert_eq!(file.trim(), host_name.to_string_lossy());
    remove(&mut rt, &id).await;
    assert_gone(&daemon, &id, i32::try_from(pid).ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_pid_namespace_has_a_holder_as_pid_1() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let mut c = config("sharepid");
    ns_options(&mut c).pid = cri::NamespaceMode::Pod.into();
    let id = run(&mut rt, c).await.expect("run");
    let st = status(&mut rt, &id).await.expect("status");
    assert_eq!(
        st.status
            .clone()
            .expect("s")
            .linux
            .expect("l")
            .namespaces
            .expect("n")
            .options
            .expect("o")
            .pid(),
        cri::NamespaceMode::Pod
    );
    let pid = i32::try_from(info(&st)["pid"].as_i64().expect("holder pid")).expect("pid");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let nspid = proc_status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .expect("NSpid");
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(cmdline.contains("pod-init"), "{cmdline:?}");
    // The holder lives in the pod's other namespaces too.
    let netns = info_path(&st, "netNamespace").expect("netns");
    assert_eq!(
        inode(Path::new(&format!("/proc/{pid}/ns/net"))),
        inode(&netns)
    );
    let pidns = info_path(&st, "pidNamespace").expect("pidns file");
    assert_eq!(
        inode(Path::new(&format!("/proc/{pid}/ns/pid"))),
        inode(&pidns)
    );
    // A process started in the pod's PID namespace sees the holder as PID 1.
    let pid_arg = format!("--pid={}", pidns.display());
    // (nsenter forks into a PID namespace by itself.)
    let seen: i32 = nsenter(&[&pid_arg, "sh", "-c", "echo $$"])
        .parse()
        .expect("a pid");
    assert!(seen > 1, "pid 1 is taken by the holder, got {seen}");
    // A holder that dies makes the pod NotReady, as a dead pause would.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let state = loop {
        let s = status(&mut rt, &id)
            .await
            .expect("status")
            .status
            .expect("s");
        if s.state() == cri::PodSandboxState::SandboxNotready
            || std::time::Instant::now() > deadline
        {
            break s.state();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(state, cri::PodSandboxState::SandboxNotready);
    stop(&mut rt, &id).await;
    assert!(!process_alive(pid), "holder reaped on stop");
    remove(&mut rt, &id).await;
    assert_gone(&daemon, &id, Some(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_survive_a_daemon_kill_and_lost_ones_turn_not_ready() {
    // The holder outlives the killed daemon and is re-parented; as a
    // subreaper this test reaps it, as init does on a node.
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");
    let net = TestNetwork::new();
    let mut daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let mut c = config("survivor");
    ns_options(&mut c).pid = cri::NamespaceMode::Pod.into();
    let id = run(&mut rt, c.clone()).await.expect("run");
    // Host network: the bridge plugin cannot remove its masquerade rules
    // once a pod's netns is gone, and a real reboot flushes them, but this
    // simulated one would not; the lost pod's IPC namespace stands in.
    let mut lost_config = config("lost");
    ns_options(&mut lost_config).network = cri::NamespaceMode::Node.into();
    let lost = run(&mut rt, lost_config).await.expect("run lost");
    let st = status(&mut rt, &id).await.expect("status");
    let pid = i32::try_from(info(&st)["pid"].as_i64().expect("pid")).expect("pid");
    let uts = info_path(&st, "utsNamespace").expect("uts");
    let lost_ipc = info_path(
        &status(&mut rt, &lost).await.expect("status"),
        "ipcNamespace",
    )
    .expect("netns");

    daemon.stop_with(Signal::SIGKILL);
    assert!(process_alive(pid), "holder survives the daemon");
    // What a reboot does to a pod: its namespace mounts vanish.
    nix::mount::umount2(&lost_ipc, nix::mount::MntFlags::MNT_DETACH).expect("umount");
    daemon.spawn();
    let mut rt = daemon.runtime().await;

    let st = status(&mut rt, &id).await.expect("status after restart");
    assert_eq!(
        st.status.expect("s").state(),
        cri::PodSandboxState::SandboxReady
    );
    assert_eq!(
        nsenter(&[&format!("--uts={}", uts.display()), "hostname"]),
        "survivor"
    );
    assert!(process_alive(pid));
    let st = status(&mut rt, &lost).await.expect("lost status");
    assert_eq!(
        st.status.expect("s").state(),
        cri::PodSandboxState::SandboxNotready
    );
    // Its name stays reserved across the restart.
    let err = run(&mut rt, c).await.expect_err("name still reserved");
    assert_eq!(err.code(), Code::AlreadyExists);

    stop(&mut rt, &id).await;
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    remove(&mut rt, &id).await;
    remove(&mut rt, &lost).await;
    assert_gone(&daemon, &id, Some(pid));
    assert_gone(&daemon, &lost, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pods_at_once_leave_nothing() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let rt = daemon.runtime().await;
    let runs = (0..20).map(|i| {
        let mut rt = rt.clone();
        async move {
            let mut c = config(&format!("many-{i}"));
            if i % 2 == 0 {
                ns_options(&mut c).pid = cri::NamespaceMode::Pod.into();
            }
            run(&mut rt, c).await.expect("concurrent run")
        }
    });
    let ids = futures::future::join_all(runs).await;
    let mut rt1 = rt.clone();
    let mut holders = Vec::new();
    for id in &ids {
        let st = status(&mut rt1, id).await.expect("status");
        assert_eq!(
            st.status.as_ref().expect("s").state(),
            cri::PodSandboxState::SandboxReady
        );
        if let Some(pid) = info(&st)["pid"].as_i64() {
            holders.push(i32::try_from(pid).expect("pid"));
        }
    }
    assert_eq!(holders.len(), 10);
    // 20 ids over 16 hex digits: two share their first one, so that
    // one-character prefix is ambiguous and must be refused, not guessed.
    let shared = (0..16u32)
        .filter_map(|d| char::from_digit(d, 16))
        .find(|d| ids.iter().filter(|id| id.starts_with(*d)).count() > 1)
        .expect("pigeonhole");
    let err = status(&mut rt1, &shared.to_string())
        .await
        .expect_err("ambiguous prefix");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains(&format!("{:?}", shared.to_string())),
        "names the prefix: {}",
        err.message()
    );
    let stops = ids.iter().map(|id| {
        let mut rt = rt.clone();
        async move { stop(&mut rt, id).await }
    });
    futures::future::join_all(stops).await;
    let removes = ids.iter().map(|id| {
        let mut rt = rt.clone();
        async move { remove(&mut rt, id).await }
    });
    futures::future::join_all(removes).await;
    assert!(list(&mut rt1, None).await.is_empty());
    for id in &ids {
        assert_gone(&daemon, id, None);
    }
    for pid in holders {
        assert!(!process_alive(pid), "holder {pid} left running");
    }
    assert_eq!(
        mountinfo_mentions(&daemon.dir.path().display().to_string()),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let mut no_name = config("x");
    no_name.metadata.as_mut().expect("m").name.clear();
    assert_eq!(
        run(&mut rt, no_name).await.expect_err("no name").code(),
        Code::InvalidArgument
    );
    let mut target = config("y");
    ns_options(&mut target).pid = cri::NamespaceMode::Target.into();
    assert_eq!(
        run(&mut rt, target).await.expect_err("target").code(),
        Code::InvalidArgument
    );
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest::default())
        .await
        .expect_err("no config");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(list(&mut rt, None).await.is_empty());
}
