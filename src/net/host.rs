//! Is the built-in network's bridge name and subnet free on this host?
//!
//! Other work may share the node: a subnet already routed elsewhere would
//! black-hole pod traffic, and an interface of that name that is not our
//! bridge would be taken over. Both are checked before use.
//!
//! Read from the kernel without a netlink crate or an `ip` exec: addresses
//! through getifaddrs(3) (nix), routes from /proc/net/route and
//! /proc/net/ipv6_route, link kinds from /sys/class/net. That is all this
//! needs (a read-only look at the main routing table), costs well under a
//! millisecond, and adds no dependency.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// An IP network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        crate::config::parse_cidr(text).map(|(addr, prefix)| Cidr { addr, prefix })
    }

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Whether `addr` lies in the first `prefix` bits of this network.
    fn contains_with(&self, addr: IpAddr, prefix: u8) -> bool {
        let (a, width) = Cidr::bits(self.addr);
        let (b, other_width) = Cidr::bits(addr);
        if width != other_width {
            return false;
        }
        let prefix = u32::from(prefix.min(width));
        if prefix == 0 {
            return true;
        }
        let shift = u32::from(width) - prefix;
        a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.contains_with(addr, self.prefix)
    }

    /// Two networks overlap when the shorter prefix covers both.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains_with(other.addr, self.prefix.min(other.prefix))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why the built-in network cannot use its bridge name or subnet here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostConflict {
    #[error("pod CIDR {0:?} is not an IP network")]
    BadCidr(String),
    #[error("interface {name} exists and is not a bridge")]
    NotABridge { name: String },
    #[error("bridge {bridge} has address {addr}, outside pod CIDR {cidr}")]
    ForeignBridgeAddress {
        bridge: String,
        addr: String,
        cidr: String,
    },
    #[error("pod CIDR {cidr} overlaps address {addr} of interface {interface}")]
    AddressOverlap {
        cidr: String,
        addr: String,
        interface: String,
    },
    #[error("pod CIDR {cidr} overlaps route {route} via interface {interface}")]
    RouteOverlap {
        cidr: String,
        route: String,
        interface: String,
    },
    #[error("cannot read {what}: {message}")]
    Unreadable { what: String, message: String },
}

/// Parses kubelet's pod CIDR: one network or a comma-joined dual-stack pair.
pub fn parse_pod_cidrs(text: &str) -> Result<Vec<Cidr>, HostConflict> {
    crate::config::parse_cidr_list(text)
        .map(|l| {
            l.into_iter()
                .map(|(addr, prefix)| Cidr { addr, prefix })
                .collect()
        })
        .ok_or_else(|| HostConflict::BadCidr(text.to_string()))
}

/// Checks that `bridge` is absent or a bridge holding only addresses in the
/// pod CIDRs, and that nothing else on the host uses or routes any of them.
pub fn check(bridge: &str, pod_cidr: &str) -> Result<(), HostConflict> {
    let nets = parse_pod_cidrs(pod_cidr)?;
    let sys = Path::new("/sys/class/net").join(bridge);
    if sys.exists() && !sys.join("bridge").is_dir() {
        return Err(HostConflict::NotABridge {
            name: bridge.to_string(),
        });
    }
    let addresses = addresses()?;
    let routes = routes()?;
    for net in &nets {
        check_one(bridge, net, &addresses, &routes)?;
    }
    Ok(())
}

fn check_one(
    bridge: &str,
    net: &Cidr,
    addresses: &[(String, IpAddr, u8)],
    routes: &[(String, Cidr)],
) -> Result<(), HostConflict> {
    for (interface, addr, prefix) in addresses {
        let (addr, prefix) = (*addr, *prefix);
        let same_family = addr.is_ipv4() == net.addr.is_ipv4();
        if interface == bridge {
            let link_local = matches!(addr, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80);
            if same_family && !link_local && !net.contains(addr) {
                return Err(HostConflict::ForeignBridgeAddress {
                    bridge: bridge.to_string(),
                    addr: format!("{addr}/{prefix}"),
                    cidr: net.to_string(),
                });
            }
            continue;
        }
        if net.overlaps(&Cidr { addr, prefix }) {
            return Err(HostConflict::AddressOverlap {
                cidr: net.to_string(),
                addr: format!("{addr}/{prefix}"),
                interface: interface.clone(),
            });
        }
    }
    for (interface, route) in routes {
        // A default route covers everything and is no conflict; routes on our
        // own bridge are the ones the bridge plugin made.
        if route.prefix == 0 || interface == bridge || interface == "lo" {
            continue;
        }
        if net.overlaps(route) {
            return Err(HostConflict::RouteOverlap {
                cidr: net.to_string(),
                route: route.to_string(),
                interface: interface.clone(),
            });
        }
    }
    Ok(())
}

fn addresses() -> Result<Vec<(String, IpAddr, u8)>, HostConflict> {
    let ifaddrs = nix::ifaddrs::getifaddrs().map_err(|e| HostConflict::Unreadable {
        what: "interface addresses".to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for ifa in ifaddrs {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            let prefix = u32::from(m.ip()).leading_ones();
            out.push((ifa.interface_name, IpAddr::V4(a.ip()), prefix_u8(prefix)));
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let prefix = u128::from(m.ip()).leading_ones();
            out.push((ifa.interface_name, IpAddr::V6(a.ip()), prefix_u8(prefix)));
        }
    }
    Ok(out)
}

fn prefix_u8(bits: u32) -> u8 {
    u8::try_from(bits).unwrap_or(u8::MAX)
}

fn read(path: &str) -> Result<String, HostConflict> {
    std::fs::read_to_string(path).map_err(|e| HostConflict::Unreadable {
        what: path.to_string(),
        message: e.to_string(),
    })
}

/// Routes of the main table, IPv4 and IPv6, as (device, destination).
fn routes() -> Result<Vec<(String, Cidr)>, HostConflict> {
    let mut out = parse_ipv4_routes(&read("/proc/net/route")?);
    // A kernel without IPv6 has no such file: no IPv6 routes then.
    if Path::new("/proc/net/ipv6_route").exists() {
        out.extend(parse_ipv6_routes(&read("/proc/net/ipv6_route")?));
    }
    Ok(out)
}

/// /proc/net/route: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`
/// with addresses as host-order (little-endian here) hex.
fn parse_ipv4_routes(text: &str) -> Vec<(String, Cidr)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            // The kernel prints the network-order word as a native integer.
            let addr = Ipv4Addr::from(dest.to_ne_bytes());
            let prefix = prefix_u8(mask.count_ones());
            Some((
                fields[0].to_string(),
                Cidr {
                    addr: IpAddr::V4(addr),
                    prefix,
                },
            ))
        })
        .collect()
}

/// /proc/net/ipv6_route: `dest(32 hex) dest_len(hex) src src_len next_hop
/// metric refcnt use flags device`.
fn parse_ipv6_routes(text: &str) -> Vec<(String, Cidr)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = u128::from_str_radix(fields.first()?, 16).ok()?;
            let prefix = u8::from_str_radix(fields.get(1)?, 16).ok()?;
            let device = fields.get(9)?;
            Some((
                device.to_string(),
                Cidr {
                    addr: IpAddr::V6(Ipv6Addr::from(dest)),
                    prefix,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    #[test]
    fn overlap_and_containment() {
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.1.2.0/24")));
        assert!(cidr("10.1.2.0/24").overlaps(&cidr("10.0.0.0/8")));
        assert!(!cidr("10.1.2.0/24").overlaps(&cidr("10.1.3.0/24")));
        assert!(cidr("10.1.2.0/24").overlaps(&cidr("10.1.2.77/32")));
        assert!(!cidr("10.1.2.0/24").overlaps(&cidr("fd00::/8")));
        assert!(cidr("fd00::/8").overlaps(&cidr("fd12:3::/64")));
        assert!(cidr("10.1.2.0/24").contains("10.1.2.200".parse().expect("ip")));
        assert!(!cidr("10.1.2.0/24").contains("10.1.3.1".parse().expect("ip")));
    }

    #[test]
    fn proc_routes_parse() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_ipv4_routes(v4);
        assert_eq!(routes[0], ("eth0".to_string(), cidr("0.0.0.0/0")));
        assert_eq!(routes[1], ("eth0".to_string(), cidr("192.0.2.0/24")));
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n";
        assert_eq!(
            parse_ipv6_routes(v6),
            vec![("eth1".to_string(), cidr("fd00::/64"))]
        );
    }

    #[test]
    fn host_check_sees_this_hosts_routes() {
        // Every host routes loopback's 127.0.0.0/8 (on `lo`, as an address).
        assert!(matches!(
            check("ygt-none0", "127.0.0.0/16"),
            Err(HostConflict::AddressOverlap { .. })
        ));
        assert!(matches!(
            check("lo", "10.0.0.0/8"),
            Err(HostConflict::NotABridge { .. })
        ));
    }
}
