//! Pod networking through the real CNI plugins (/usr/lib/cni), as root: each
//! test makes its own netns, bridge `ygt<random>` and a free 10.x subnet, and
//! removes them again. Traffic only flows between the host and that netns.

// Not every fixture of the shared module is used here.
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::net::TestNetwork;
use yonggi::config::{Config, NetworkConfig};
use yonggi::net::{HostConflict, NetError, PodNetworkRequest, PortMapping, Protocol, Service};
use yonggi::node::Node;
use yonggi::state::Store;

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
        .collect()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One test's private network world.
struct World {
    tag: String,
    bridge: String,
    subnet: String,
    pod_cidr: String,
    netns: String,
    dir: tempfile::TempDir,
    conf_dir: PathBuf,
    config: Arc<Config>,
    store: Arc<Store>,
    /// Dropped after `World::drop`: removes the bridge and masquerade rules.
    _net: TestNetwork,
}

impl World {
    fn new() -> World {
        World::with_ipv6(false)
    }

    /// With `ipv6`, the pod CIDR is dual stack: the 10.x/24 plus a free
    /// fdXX:XXXX::/64.
    fn with_ipv6(ipv6: bool) -> World {
        support::daemon::require_root();
        let net = if ipv6 {
            TestNetwork::dual_stack()
        } else {
            TestNetwork::new()
        };
        let tag = net.bridge.trim_start_matches("ygt").to_string();
        let subnet = net.cidrs()[0].to_string();
        let netns = format!("ygt-{tag}");
        run("ip", &["netns", "add", &netns]);
        let dir = tempfile::Builder::new()
            .prefix("yonggi-net-")
            .tempdir()
            .expect("tempdir");
        let conf_dir = net.conf_dir.path().to_path_buf();
        let config = Config {
            root: dir.path().join("root"),
            state_dir: dir.path().join("run"),
            network: NetworkConfig {
                cni_conf_dir: conf_dir.clone(),
                cni_bin_dirs: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
                bridge: net.bridge.clone(),
                pod_cidr: net.pod_cidr.clone(),
            },
            ..Config::default()
        };
        std::fs::create_dir_all(&config.root).expect("root");
        let store = Arc::new(Store::open(&config.root).expect("store"));
        World {
            tag,
            bridge: net.bridge.clone(),
            subnet,
            pod_cidr: net.pod_cidr.clone(),
            netns,
            dir,
            conf_dir,
            config: Arc::new(config),
            store,
            _net: net,
        }
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// A bridge + portmap conflist on this world's bridge and subnet;
    /// `extra` is appended to the plugin list.
    fn conflist(&self, bridge: &str, extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"ygt-{tag}","plugins":[
              {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,"hairpinMode":true,
                "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],
                         "routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{ipam}"}}}},
              {{"type":"portmap","capabilities":{{"portMappings":true}}}}{extra}]}}"#,
            tag = self.tag,
            subnet = self.subnet,
            ipam = self.ipam_dir().display(),
        )
    }

    fn write_conf(&self, name: &str, text: &str) {
        std::fs::write(self.conf_dir.join(name), text).expect("write conf");
    }

    fn service(&self) -> Service {
        let node = Arc::new(Node::new(self.config.clone(), self.store.clone()).expect("node"));
        Service::new(self.config.clone(), node).expect("net service")
    }

    fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    fn request(&self, id: &str, port_mappings: Vec<PortMapping>) -> PodNetworkRequest {
        PodNetworkRequest {
            id: id.to_string(),
            name: format!("pod-{}", self.tag),
            namespace: "ygt".to_string(),
            uid: format!("uid-{}", self.tag),
            netns_path: self.netns_path(),
            port_mappings,
        }
    }

    /// Interfaces enslaved to the test bridge (the host ends of veths).
    fn bridge_ports(&self) -> Vec<String> {
        let dir = Path::new("/sys/class/net").join(&self.bridge).join("brif");
        match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .map(|e| {
                    e.expect("brif entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// IPs host-local holds for this network (one file per reserved IP).
    /// (The test conflists' network, and the built-in one under the root.)
    fn reservations(&self) -> Vec<String> {
        let dirs = [
            self.ipam_dir().join(format!("ygt-{}", self.tag)),
            self.config.root.join("net/ipam/yonggi"),
        ];
        dirs.iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .map(|e| {
                e.expect("ipam entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.parse::<IpAddr>().is_ok())
            .collect()
    }

    /// iptables rules mentioning the pod id (bridge ipMasq and portmap tag
    /// their rules with it).
    fn iptables_rules_for(&self, id: &str) -> Vec<String> {
        run("iptables-save", &[])
            .lines()
            .filter(|l| l.contains(id))
            .map(str::to_string)
            .collect()
    }

    fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    fn assert_clean(&self, id: &str) {
        assert_eq!(
            self.bridge_ports(),
            Vec::<String>::new(),
            "veth left on bridge"
        );
        assert_eq!(
            self.reservations(),
            Vec::<String>::new(),
            "IPAM reservation left"
        );
        assert_eq!(
            self.iptables_rules_for(id),
            Vec::<String>::new(),
            "iptables left"
        );
        let cache = self
            .config
            .root
            .join("net/cache")
            .join(format!("{id}.json"));
        assert!(!cache.exists(), "cache entry left");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Some tests delete the netns themselves.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A TCP listener created inside the netns: a thread joins the namespace,
/// binds, and hands the socket back (it stays in that namespace).
fn listen_in_netns(netns: &Path) -> TcpListener {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("open netns");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpListener::bind(("0.0.0.0", 0)).expect("bind in netns")
    })
    .join()
    .expect("listener thread")
}

/// Like `listen_in_netns`, on `[::]` (IPv4 and IPv6).
fn listen_in_netns_v6(netns: &Path) -> TcpListener {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("open netns");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpListener::bind(("::", 0)).expect("bind in netns")
    })
    .join()
    .expect("listener thread")
}

/// Serves `n` connections, each greeted with `greeting`.
fn serve(listener: TcpListener, n: usize, greeting: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..n {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.write_all(greeting.as_bytes()).expect("greet");
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

fn pod_id() -> String {
    (0..4).map(|_| random_hex(16)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_gives_reachable_ip_and_host_port_and_del_is_idempotent() {
    let world = World::new();
    world.write_conf("10-test.conflist", &world.conflist(&world.bridge, ""));
    let service = world.service();
    let listener = listen_in_netns(&world.netns_path());
    let container_port = listener.local_addr().expect("addr").port();
    let host_port = free_host_port();
    let id = pod_id();
    let request = world.request(
        &id,
        vec![PortMapping {
            host_port,
            container_port,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        }],
    );

    let net = service.setup(&request).await.expect("ADD");
    assert_eq!(net.interface, "eth0");
    assert_eq!(net.network, format!("ygt-{}", world.tag));
    assert_eq!(net.ips.len(), 1, "{net:?}");
    let ip = net.ips[0].addr;
    let subnet = yonggi::net::host::Cidr::parse(&world.subnet).expect("subnet");
    assert!(subnet.contains(ip), "{ip} not in {}", world.subnet);

    let inside = run(
        "ip",
        &[
            "-n",
            &world.netns,
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ],
    );
    assert!(inside.contains(&format!("{ip}/24")), "{inside}");
    let lo = run("ip", &["-n", &world.netns, "-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "lo is not up: {lo}");
    assert_eq!(world.bridge_ports().len(), 1);
    assert_eq!(world.reservations(), vec![ip.to_string()]);

    // The same request again is answered from the cache, without a second IP.
    assert_eq!(service.setup(&request).await.expect("ADD again"), net);
    assert_eq!(service.pod_network(&id).expect("cached"), Some(net.clone()));

    let server = serve(listener, 2, "hello from the pod");
    assert_eq!(fetch((ip, container_port)), "hello from the pod");
    let localhost: IpAddr = [127, 0, 0, 1].into();
    assert_eq!(fetch((localhost, host_port)), "hello from the pod");
    server.join().expect("server");

    service.teardown(&id).await.expect("DEL");
    world.assert_clean(&id);
    service.teardown(&id).await.expect("DEL again");
    service
        .teardown(&pod_id())
        .await
        .expect("DEL of an unknown pod");
    assert_eq!(service.pod_network(&id).expect("cache"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_uses_the_cache_after_the_conf_dir_changed_and_a_restart() {
    let world = World::new();
    world.write_conf("10-test.conflist", &world.conflist(&world.bridge, ""));
    let id = pod_id();
    {
        let service = world.service();
        service
            .setup(&world.request(&id, vec![]))
            .await
            .expect("ADD");
        assert_eq!(world.bridge_ports().len(), 1);
    }
    // A new first config (another bridge, a plugin that does not exist): DEL
    // must still run the chain ADD used.
    world.write_conf(
        "00-new.conflist",
        &world.conflist("ygtother0", r#",{"type":"ygt-missing-plugin"}"#),
    );
    let restarted = world.service();
    assert!(!restarted.status().ready);
    assert_eq!(restarted.attached_ids().expect("ids"), vec![id.clone()]);
    restarted.teardown(&id).await.expect("DEL from cache");
    world.assert_clean(&id);
    assert!(!Path::new("/sys/class/net/ygtother0").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_after_the_netns_is_gone_still_releases_everything() {
    let world = World::new();
    // The bridge plugin (1.1.1) finds its ipMasq rules through the pod's
    // addresses inside the netns, so without the netns it cannot remove
    // them: the pod module runs DEL before it releases the netns. Here the
    // masquerade is off, and portmap (whose DEL needs no netns) is checked.
    let conf = world
        .conflist(&world.bridge, "")
        .replace(r#""ipMasq":true"#, r#""ipMasq":false"#);
    world.write_conf("10-test.conflist", &conf);
    let service = world.service();
    let id = pod_id();
    let mapping = PortMapping {
        host_port: free_host_port(),
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: String::new(),
    };
    service
        .setup(&world.request(&id, vec![mapping]))
        .await
        .expect("ADD");
    assert!(
        !world.iptables_rules_for(&id).is_empty(),
        "portmap made no rules"
    );
    assert_eq!(world.reservations().len(), 1);
    // Unmounted, as a pod whose namespace was released first leaves it: the
    // empty file stays behind and is no netns any more.
    run("umount", &[world.netns_path().to_str().expect("utf-8")]);
    assert!(world.netns_path().exists());
    service.teardown(&id).await.expect("DEL without netns");
    world.assert_clean(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plugin_type_is_named_and_changes_nothing() {
    let world = World::new();
    world.write_conf(
        "10-test.conflist",
        &world.conflist(&world.bridge, r#",{"type":"ygt-no-such-plugin"}"#),
    );
    let service = world.service();
    let status = service.status();
    assert!(!status.ready);
    assert_eq!(status.reason, "NetworkPluginNotReady");
    assert!(
        status.message.contains("ygt-no-such-plugin"),
        "{}",
        status.message
    );
    let id = pod_id();
    let err = service
        .setup(&world.request(&id, vec![]))
        .await
        .expect_err("ADD must fail");
    assert!(
        matches!(&err, NetError::PluginNotFound { plugin, .. } if plugin == "ygt-no-such-plugin"),
        "{err:?}"
    );
    assert!(err.is_misconfiguration());
    assert!(!world.bridge_exists(), "bridge created by a failed ADD");
    world.assert_clean(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_failing_midway_rolls_back_the_chain() {
    let world = World::new();
    // portmap rejects a non-boolean "snat" after bridge has run.
    let conf = world.conflist(&world.bridge, "").replace(
        r#"{"type":"portmap","#,
        r#"{"type":"portmap","snat":"maybe","#,
    );
    world.write_conf("10-test.conflist", &conf);
    let service = world.service();
    let id = pod_id();
    let err = service
        .setup(&world.request(
            &id,
            vec![PortMapping {
                host_port: free_host_port(),
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: String::new(),
            }],
        ))
        .await
        .expect_err("ADD must fail");
    match &err {
        NetError::PluginFailed {
            plugin, command, ..
        } => {
            assert_eq!(plugin, "portmap");
            assert_eq!(*command, "ADD");
        }
        other => panic!("unexpected error {other:?}"),
    }
    world.assert_clean(&id);
    let inside = run("ip", &["-n", &world.netns, "-o", "link", "show"]);
    assert!(!inside.contains("eth0"), "eth0 left in the netns: {inside}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_network_when_the_conf_dir_is_empty() {
    let world = World::new();
    let service = world.service();
    let status = service.status();
    assert!(status.ready, "{}", status.message);
    let listener = listen_in_netns(&world.netns_path());
    let port = listener.local_addr().expect("addr").port();
    let id = pod_id();
    let net = service
        .setup(&world.request(&id, vec![]))
        .await
        .expect("ADD");
    assert_eq!(net.network, "yonggi");
    let ip = net.ips[0].addr;
    let subnet = yonggi::net::host::Cidr::parse(&world.subnet).expect("subnet");
    assert!(subnet.contains(ip), "{ip} not in {}", world.subnet);
    // The bridge is the gateway, and the node-wide masquerade rule exists.
    let gateway = net.ips[0].gateway.expect("gateway");
    let on_bridge = run("ip", &["-4", "-o", "addr", "show", "dev", &world.bridge]);
    assert!(on_bridge.contains(&gateway.to_string()), "{on_bridge}");
    let nat = run("iptables-save", &["-t", "nat"]);
    assert!(
        nat.contains(&format!("-A POSTROUTING -s {}", world.subnet)),
        "no masquerade rule for {}: {nat}",
        world.subnet
    );
    // IPAM state lives under yonggi's root, not /var/lib/cni.
    let ipam = world.config.root.join("net/ipam/yonggi");
    assert!(
        ipam.join(ip.to_string()).exists(),
        "no reservation in {}",
        ipam.display()
    );
    let server = serve(listener, 1, "built-in");
    assert_eq!(fetch((ip, port)), "built-in");
    server.join().expect("server");
    service.teardown(&id).await.expect("DEL");
    assert_eq!(world.bridge_ports(), Vec::<String>::new());
    assert!(!ipam.join(ip.to_string()).exists(), "IPAM reservation left");
    assert_eq!(world.iptables_rules_for(&id), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_with_a_test_network_is_network_ready() {
    support::daemon::require_root();
    let network = TestNetwork::new();
    let daemon = support::Daemon::start_with(support::DaemonOptions {
        extra_config: network.config_toml(),
    });
    let mut rt = daemon.runtime().await;
    let conditions = rt
        .status(k8s_cri::v1::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .status
        .expect("status")
        .conditions;
    let ready = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(ready.status, "{}", ready.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_network_refuses_a_subnet_the_host_uses() {
    support::daemon::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = format!("ygt{}", random_hex(8));
    let netns = Netns::new(format!("ygt-{}", random_hex(8)));
    // Loopback holds 127.0.0.1/8 on every host.
    let config = Arc::new(Config {
        root: dir.path().join("root"),
        network: NetworkConfig {
            cni_conf_dir: dir.path().join("net.d"),
            cni_bin_dirs: vec!["/usr/lib/cni".into()],
            bridge: bridge.clone(),
            pod_cidr: "127.0.0.0/16".into(),
        },
        ..Config::default()
    });
    std::fs::create_dir_all(&config.root).expect("root");
    let store = Arc::new(Store::open(&config.root).expect("store"));
    let node = Arc::new(Node::new(config.clone(), store).expect("node"));
    let service = Service::new(config, node).expect("service");
    let status = service.status();
    assert!(!status.ready);
    assert!(
        status.message.contains("127.0.0.0/16"),
        "{}",
        status.message
    );
    let err = service
        .setup(&PodNetworkRequest {
            id: pod_id(),
            name: "p".into(),
            namespace: "n".into(),
            uid: "u".into(),
            netns_path: netns.path(),
            port_mappings: vec![],
        })
        .await
        .expect_err("ADD must fail");
    assert!(
        matches!(
            err,
            NetError::HostConflict(HostConflict::AddressOverlap { .. })
        ),
        "{err:?}"
    );
    assert!(!Path::new("/sys/class/net").join(&bridge).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rpc_reports_network_not_ready_with_the_missing_plugin() {
    support::daemon::require_root();
    let conf = tempfile::tempdir().expect("conf dir");
    std::fs::write(
        conf.path().join("10-x.conflist"),
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"ygt-absent-plugin"}]}"#,
    )
    .expect("write");
    let daemon = support::Daemon::start_with(support::DaemonOptions {
        extra_config: format!(
            "[network]\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"/usr/lib/cni\"]\n",
            conf.path().display()
        ),
    });
    let mut rt = daemon.runtime().await;
    let conditions = rt
        .status(k8s_cri::v1::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .status
        .expect("status")
        .conditions;
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network.message.contains("ygt-absent-plugin"),
        "{}",
        network.message
    );

    std::fs::write(
        conf.path().join("05-ok.conf"),
        r#"{"cniVersion":"1.0.0","name":"ok","type":"bridge","bridge":"ygtunused0"}"#,
    )
    .expect("write");
    let conditions = rt
        .status(k8s_cri::v1::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .status
        .expect("status")
        .conditions;
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(network.status, "{}", network.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_network_dual_stack() {
    let world = World::with_ipv6(true);
    let service = world.service();
    let listener = listen_in_netns_v6(&world.netns_path());
    let port = listener.local_addr().expect("addr").port();
    let id = pod_id();
    let net = service
        .setup(&world.request(&id, vec![]))
        .await
        .expect("ADD");
    assert_eq!(net.ips.len(), 2, "{net:?}");
    let cidrs = yonggi::net::host::parse_pod_cidrs(&world.pod_cidr).expect("cidrs");
    assert!(net.ips[0].addr.is_ipv4() && cidrs[0].contains(net.ips[0].addr));
    assert!(net.ips[1].addr.is_ipv6() && cidrs[1].contains(net.ips[1].addr));
    let nat6 = run("ip6tables-save", &["-t", "nat"]);
    assert!(nat6.contains(&format!("-s {}", cidrs[1])), "{nat6}");
    let server = serve(listener, 2, "dual");
    assert_eq!(fetch((net.ips[0].addr, port)), "dual");
    assert_eq!(fetch((net.ips[1].addr, port)), "dual");
    server.join().expect("server");
    service.teardown(&id).await.expect("DEL");
    world.assert_clean(&id);
}

/// An extra netns, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        run("ip", &["netns", "add", &name]);
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pods_get_distinct_ips_and_leave_nothing() {
    let world = World::new();
    world.write_conf("10-test.conflist", &world.conflist(&world.bridge, ""));
    let service = Arc::new(world.service());
    let pods: Vec<(String, Netns)> = (0..10)
        .map(|i| (pod_id(), Netns::new(format!("ygt-{}-{i}", world.tag))))
        .collect();
    let setups = pods.iter().map(|(id, ns)| {
        let mut request = world.request(id, vec![]);
        request.netns_path = ns.path();
        let service = service.clone();
        async move { service.setup(&request).await }
    });
    let nets = futures::future::join_all(setups).await;
    let mut ips: Vec<IpAddr> = nets
        .into_iter()
        .map(|n| n.expect("concurrent ADD").ips[0].addr)
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), pods.len(), "duplicate pod IPs");
    assert_eq!(world.bridge_ports().len(), pods.len());
    // Each one's CHECK passes against its cached result.
    for (id, _) in &pods {
        service.check(id).await.expect("CHECK");
    }
    let teardowns = pods.iter().map(|(id, _)| service.teardown(id));
    for result in futures::future::join_all(teardowns).await {
        result.expect("concurrent DEL");
    }
    for (id, _) in &pods {
        world.assert_clean(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_broken_attachment() {
    let world = World::new();
    // Without eth0 the bridge plugin cannot find its ipMasq rules (see
    // del_after_the_netns_is_gone_...): masquerade is off here.
    let conf = world
        .conflist(&world.bridge, "")
        .replace(r#""ipMasq":true"#, r#""ipMasq":false"#);
    world.write_conf("10-test.conflist", &conf);
    let service = world.service();
    let id = pod_id();
    assert!(matches!(
        service.check(&id).await,
        Err(NetError::NotAttached { .. })
    ));
    service
        .setup(&world.request(&id, vec![]))
        .await
        .expect("ADD");
    service.check(&id).await.expect("CHECK of a fresh pod");
    run("ip", &["-n", &world.netns, "link", "del", "eth0"]);
    let err = service.check(&id).await.expect_err("CHECK must fail");
    assert!(
        matches!(&err, NetError::PluginFailed { plugin, command: "CHECK", .. } if plugin == "bridge"),
        "{err:?}"
    );
    service.teardown(&id).await.expect("DEL");
    world.assert_clean(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_netns_is_rejected_before_anything_runs() {
    let world = World::new();
    world.write_conf("10-test.conflist", &world.conflist(&world.bridge, ""));
    let service = world.service();
    let id = pod_id();
    let plain = world.dir.path().join("not-a-netns");
    std::fs::write(&plain, "").expect("plain file");
    for path in [
        PathBuf::from(format!("/run/netns/ygt-missing-{}", world.tag)),
        plain,
    ] {
        let mut request = world.request(&id, vec![]);
        request.netns_path = path;
        let err = service.setup(&request).await.expect_err("ADD must fail");
        assert!(
            matches!(
                err,
                NetError::InvalidRequest {
                    field: "netns_path",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert!(!world.bridge_exists(), "a plugin ran");
    world.assert_clean(&id);
    assert_eq!(service.attached_ids().expect("ids"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_releases_pods_whose_netns_is_gone() {
    let world = World::new();
    // ipMasq off: the bridge plugin finds those rules only inside the netns.
    let conf = world
        .conflist(&world.bridge, "")
        .replace(r#""ipMasq":true"#, r#""ipMasq":false"#);
    world.write_conf("10-test.conflist", &conf);
    let gone = Netns::new(format!("ygt-{}-gone", world.tag));
    let (alive_id, gone_id) = (pod_id(), pod_id());
    {
        let service = world.service();
        service
            .setup(&world.request(&alive_id, vec![]))
            .await
            .expect("ADD");
        let mut request = world.request(&gone_id, vec![]);
        request.netns_path = gone.path();
        service.setup(&request).await.expect("ADD");
    }
    assert_eq!(world.reservations().len(), 2);
    drop(gone);
    let restarted = world.service();
    assert_eq!(
        restarted.release_stale().await.expect("release"),
        vec![gone_id.clone()]
    );
    assert_eq!(world.reservations().len(), 1);
    assert_eq!(world.iptables_rules_for(&gone_id), Vec::<String>::new());
    assert_eq!(
        restarted.attached_ids().expect("ids"),
        vec![alive_id.clone()]
    );
    // The kernel removes the dead netns's veth asynchronously.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while world.bridge_ports().len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(world.bridge_ports().len(), 1);
    assert!(restarted.pod_network(&alive_id).expect("cache").is_some());
    restarted.teardown(&alive_id).await.expect("DEL");
    world.assert_clean(&alive_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_cache_entry_does_not_wedge_teardown() {
    let world = World::new();
    let service = world.service();
    let id = pod_id();
    let entry = world
        .config
        .root
        .join("net/cache")
        .join(format!("{id}.json"));
    std::fs::write(&entry, "").expect("empty entry");
    service.teardown(&id).await.expect("DEL");
    assert!(!entry.exists());
}
