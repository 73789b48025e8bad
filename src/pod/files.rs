//! The files a pod's containers bind-mount: `/etc/hostname`, `/etc/hosts`,
//! `/etc/resolv.conf`. Content is computed by pure functions (unit-tested)
//! and written atomically (temp file + rename), so a container never sees a
//! half-written file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::spec::DnsConfig;

pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
pub const HOST_HOSTS: &str = "/etc/hosts";

/// `/etc/hosts` of a pod with its own network namespace.
pub fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut text = String::from(
        "# Written by yonggi for this pod.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        for ip in ips {
            text.push_str(&format!("{ip}\t{hostname}\n"));
        }
    }
    text
}

/// `/etc/resolv.conf` from kubelet's DNS config, or `None` when it asks for
/// nothing (then the host's file is copied, as other runtimes do).
pub fn resolv_conf(dns: Option<&DnsConfig>) -> Option<String> {
    let dns = dns?;
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return None;
    }
    let mut text = String::new();
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Some(text)
}

/// Writes `content` to `path` atomically, mode 0644.
pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(content)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// The host's copy of `path`, or nothing if it has none.
pub fn host_file(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_servers_searches_and_options() {
        let dns = DnsConfig {
            servers: vec!["10.0.0.10".into(), "10.0.0.11".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into(), "timeout:1".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).expect("content"),
            "search ns.svc.cluster.local cluster.local\n\
             nameserver 10.0.0.10\nnameserver 10.0.0.11\n\
             options ndots:5 timeout:1\n"
        );
        assert_eq!(resolv_conf(Some(&DnsConfig::default())), None);
        assert_eq!(resolv_conf(None), None);
    }

    #[test]
    fn hosts_names_the_pod() {
        let text = hosts("web-0", &["10.1.0.5".to_string()]);
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.1.0.5\tweb-0\n"));
        assert!(!hosts("web-0", &[]).contains("web-0"));
    }
}
