//! A pod's network (CNI through the daemon): reachable pod IP, host ports on
//! 127.0.0.1, a bad CNI config refused without leftovers.

mod pod_support;
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;
use pod_support::*;
use tonic::Code;

/// A listener bound inside the pod's network namespace by a thread of this
/// test (the socket stays in that namespace after the thread ends).
fn listen_in(netns: &Path, port: u16) -> TcpListener {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("open netns");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpListener::bind(("0.0.0.0", port)).expect("bind in the pod")
    })
    .join()
    .expect("listener thread")
}

fn serve(listener: TcpListener, n: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..n {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.write_all(b"hello from the pod").expect("greet");
        }
    })
}

fn fetch(addr: (IpAddr, u16)) -> String {
    let mut conn =
        TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read");
    text
}

fn free_host_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_ip_and_host_port_reach_a_listener_in_the_pod() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let host_port = free_host_port();
    let mut c = config("web");
    c.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp.into(),
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let id = run(&mut rt, c).await.expect("run");
    let st = status(&mut rt, &id).await.expect("status");
    let ip: IpAddr = st
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.parse().expect("an IP"))
        .expect("network status");
    assert!(
        net.cidrs().iter().any(|c| c.contains(ip)),
        "{ip} not in {}",
        net.pod_cidr
    );
    let hosts = std::fs::read_to_string(info_path(&st, "hosts").expect("hosts")).expect("hosts");
    assert!(hosts.contains(&format!("{ip}\tweb\n")), "{hosts}");
    assert_eq!(bridge_ports(&net.bridge).len(), 1);

    let netns = info_path(&st, "netNamespace").expect("netns");
    let server = serve(listen_in(&netns, 8080), 2);
    assert_eq!(fetch((ip, 8080)), "hello from the pod");
    assert_eq!(
        fetch((IpAddr::from([127, 0, 0, 1]), host_port)),
        "hello from the pod"
    );
    server.join().expect("server");

    stop(&mut rt, &id).await;
    let s = status(&mut rt, &id)
        .await
        .expect("status")
        .status
        .expect("s");
    assert_eq!(s.network.map(|n| n.ip).unwrap_or_default(), "");
    assert_eq!(bridge_ports(&net.bridge), Vec::<String>::new(), "veth left");
    assert_eq!(
        iptables_rules_for(&id),
        Vec::<String>::new(),
        "iptables left"
    );
    stop(&mut rt, &id).await;
    remove(&mut rt, &id).await;
    assert_gone(&daemon, &id, None);
    assert!(
        TcpStream::connect_timeout(
            &(IpAddr::from([127, 0, 0, 1]), host_port).into(),
            Duration::from_millis(500)
        )
        .is_err(),
        "host port still forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cni_config_is_refused_and_leaves_nothing() {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let bad = net.conf_dir.path().join("10-broken.conflist");
    std::fs::write(&bad, "{ this is not json").expect("write conf");
    let c = config("unlucky");
    let err = run(&mut rt, c.clone()).await.expect_err("bad cni config");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("10-broken.conflist"),
        "{}",
        err.message()
    );
    assert!(list(&mut rt, None).await.is_empty());
    let left: Vec<PathBuf> = std::fs::read_dir(pods_dir(&daemon))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        mountinfo_mentions(&daemon.dir.path().display().to_string()),
        Vec::<String>::new()
    );
    assert_eq!(bridge_ports(&net.bridge), Vec::<String>::new());

    // The name was released: with the config fixed, the same pod runs.
    std::fs::remove_file(&bad).expect("remove bad conf");
    let id = run(&mut rt, c).await.expect("run after the fix");
    remove(&mut rt, &id).await;
    assert_gone(&daemon, &id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pod_reports_both_ips() {
    let net = TestNetwork::dual_stack();
    let daemon = pod_daemon(&net, "");
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let id = run(&mut rt, config("dual")).await.expect("run");
    let st = status(&mut rt, &id).await.expect("status");
    let network = st.status.and_then(|s| s.network).expect("network status");
    let primary: IpAddr = network.ip.parse().expect("primary ip");
    assert!(primary.is_ipv4(), "IPv4 first: {primary}");
    let extra: Vec<IpAddr> = network
        .additional_ips
        .iter()
        .map(|ip| ip.ip.parse().expect("additional ip"))
        .collect();
    assert_eq!(extra.len(), 1, "{extra:?}");
    assert!(extra[0].is_ipv6(), "{extra:?}");
    for ip in std::iter::once(primary).chain(extra) {
        assert!(
            net.cidrs().iter().any(|c| c.contains(ip)),
            "{ip} not in {}",
            net.pod_cidr
        );
    }
    remove(&mut rt, &id).await;
    assert_gone(&daemon, &id, None);
}
