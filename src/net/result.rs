//! Reading a CNI result (spec 1.0 "Success"; 0.3/0.4 share its shape, and
//! the pre-0.3 `ip4`/`ip6` form is still read) into the pod's addresses.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use super::{PodIp, PodNetwork};

#[derive(Debug, Deserialize)]
struct Result100 {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
    ip4: Option<Legacy>,
    ip6: Option<Legacy>,
}

#[derive(Debug, Deserialize)]
struct Interface {
    name: String,
    #[serde(default)]
    sandbox: String,
}

#[derive(Debug, Deserialize)]
struct IpConfig {
    address: String,
    gateway: Option<String>,
    interface: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct Legacy {
    ip: String,
    gateway: Option<String>,
}

fn parse_address(text: &str, gateway: Option<&str>) -> Result<PodIp, String> {
    let (addr, prefix) = crate::config::parse_cidr(text)
        .ok_or_else(|| format!("address {text:?} is not in CIDR notation"))?;
    let gateway = match gateway.filter(|g| !g.is_empty()) {
        Some(g) => Some(
            g.parse::<IpAddr>()
                .map_err(|_| format!("gateway {g:?} is not an IP address"))?,
        ),
        None => None,
    };
    Ok(PodIp {
        addr,
        prefix,
        gateway,
    })
}

/// The addresses of the pod's interface `ifname`. An address that names no
/// interface counts as the pod's (IPAM-only results do that); one that names
/// a host-side interface does not.
pub(crate) fn pod_network(
    network: &str,
    ifname: &str,
    result: &Value,
) -> Result<PodNetwork, String> {
    let parsed: Result100 =
        serde_json::from_value(result.clone()).map_err(|e| format!("malformed result: {e}"))?;
    let mut ips = Vec::new();
    for ip in &parsed.ips {
        let ours = match ip.interface.and_then(|i| parsed.interfaces.get(i)) {
            Some(iface) => !iface.sandbox.is_empty() && iface.name == ifname,
            None => true,
        };
        if ours {
            ips.push(parse_address(&ip.address, ip.gateway.as_deref())?);
        }
    }
    for legacy in [&parsed.ip4, &parsed.ip6].into_iter().flatten() {
        ips.push(parse_address(&legacy.ip, legacy.gateway.as_deref())?);
    }
    // Stable: IPv4 first, each family in result order.
    ips.sort_by_key(|ip| ip.addr.is_ipv6());
    Ok(PodNetwork {
        network: network.to_string(),
        interface: ifname.to_string(),
        ips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bridge_result_gives_sandbox_addresses_v4_first() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2},
                {"address": "10.1.0.1/24", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let net = pod_network("n", "eth0", &result).expect("parse");
        let addrs: Vec<String> = net.ips.iter().map(|i| i.addr.to_string()).collect();
        assert_eq!(addrs, vec!["10.1.0.5", "fd00::5"]);
        assert_eq!(net.ips[0].prefix, 24);
        assert_eq!(net.ips[0].gateway, Some("10.1.0.1".parse().expect("ip")));
        assert_eq!(net.interface, "eth0");
    }

    #[test]
    fn legacy_and_ipam_only_results() {
        let net = pod_network(
            "n",
            "eth0",
            &json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.2.0.9/16"}}),
        )
        .expect("legacy");
        assert_eq!(net.ips[0].addr.to_string(), "10.2.0.9");
        let net =
            pod_network("n", "eth0", &json!({"ips": [{"address": "10.3.0.2/24"}]})).expect("ipam");
        assert_eq!(net.ips.len(), 1);
        assert!(pod_network("n", "eth0", &json!({"ips": [{"address": "10.3.0.2"}]})).is_err());
        assert!(pod_network("n", "eth0", &json!({"ips": "x"})).is_err());
    }
}
