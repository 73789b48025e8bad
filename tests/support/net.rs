//! A private built-in pod network for one test daemon: a bridge name
//! `ygt<random>`, a 10.x/24 (optionally also a ULA /64) that nothing on the
//! host uses, and an empty CNI conf dir so the host's /etc/cni/net.d is never
//! read. Two test daemons on one machine then never share a bridge or hand
//! out the same IPs. Dropping it removes the bridge and the masquerade rules
//! yonggi made for its CIDRs.
//!
//! ```ignore
//! let network = support::net::TestNetwork::new();
//! let daemon = Daemon::start_with(DaemonOptions { extra_config: network.config_toml() });
//! ```

use std::process::{Command, Stdio};

use yonggi::net::host;

pub struct TestNetwork {
    pub bridge: String,
    /// As kubelet would send it: `10.x.y.0/24`, or `10.x.y.0/24,fdXX:XXXX::/64`.
    pub pod_cidr: String,
    pub conf_dir: tempfile::TempDir,
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
        .collect()
}

impl TestNetwork {
    pub fn new() -> TestNetwork {
        TestNetwork::build(false)
    }

    pub fn dual_stack() -> TestNetwork {
        TestNetwork::build(true)
    }

    fn build(ipv6: bool) -> TestNetwork {
        let bridge = format!("ygt{}", random_hex(8));
        let v4 = (0..200)
            .map(|_| {
                format!(
                    "10.{}.{}.0/24",
                    100 + rand::random::<u8>() % 150,
                    rand::random::<u8>()
                )
            })
            .find(|s| host::check(&bridge, s).is_ok())
            .expect("a free 10.x/24 subnet");
        let pod_cidr = if ipv6 {
            let v6 = (0..200)
                .map(|_| format!("fd{:02x}:{}::/64", rand::random::<u8>(), random_hex(4)))
                .find(|s| host::check(&bridge, s).is_ok())
                .expect("a free ULA /64");
            format!("{v4},{v6}")
        } else {
            v4
        };
        let conf_dir = tempfile::Builder::new()
            .prefix("yonggi-cni-")
            .tempdir()
            .expect("empty cni conf dir");
        TestNetwork {
            bridge,
            pod_cidr,
            conf_dir,
        }
    }

    /// The `[network]` section for a test daemon's config.
    pub fn config_toml(&self) -> String {
        format!(
            "[network]\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\npod_cidr = \"{}\"\nbridge = \"{}\"\n",
            self.conf_dir.path().display(),
            self.pod_cidr,
            self.bridge
        )
    }

    pub fn cidrs(&self) -> Vec<host::Cidr> {
        host::parse_pod_cidrs(&self.pod_cidr).expect("pod cidr")
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for cidr in self.cidrs() {
            let _ = Command::new(yonggi::net::masq::tool(&cidr))
                .args(["-w", "-t", "nat", "-D", "POSTROUTING"])
                .args(yonggi::net::masq::rule(&cidr))
                .stderr(Stdio::null())
                .status();
        }
        if std::path::Path::new("/sys/class/net")
            .join(&self.bridge)
            .exists()
        {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
    }
}
