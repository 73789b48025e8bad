//! The daemon's configuration: one TOML file, every default in this file.
//!
//! `manifests/config.toml` is the same defaults written out with comments; a unit
//! test keeps the two in step. Unknown keys and bad values stop start-up with a
//! message that names the key and the file, because a typo that silently falls
//! back to a default is the worst kind of misconfiguration on a node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `yonggi serve` looks when `--config` is not given. A missing file there
/// means "all defaults"; a missing file named with `--config` is an error.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/yonggi/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent root: the metadata store, image content, unpacked layers, snapshots.
    pub root: PathBuf,
    /// Runtime state that must not survive a reboot: sockets, pid and exit files, ns files.
    pub state_dir: PathBuf,
    /// The CRI socket (RuntimeService and ImageService).
    pub socket: PathBuf,
    /// How long in-flight RPCs may run after SIGTERM/SIGINT before the daemon exits anyway.
    pub shutdown_grace_seconds: u64,
    pub log: LogConfig,
    pub cgroup: CgroupConfig,
    pub image: ImageConfig,
    /// Registry settings by host name (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`).
    pub registries: BTreeMap<String, RegistryConfig>,
    pub network: NetworkConfig,
    pub streaming: StreamingConfig,
    /// RuntimeClass handlers accepted besides the default (""), by name.
    pub runtime_handlers: BTreeMap<String, RuntimeHandlerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/yonggi"),
            state_dir: PathBuf::from("/run/yonggi"),
            socket: PathBuf::from("/run/yonggi/yonggi.sock"),
            shutdown_grace_seconds: 10,
            log: LogConfig::default(),
            cgroup: CgroupConfig::default(),
            image: ImageConfig::default(),
            registries: BTreeMap::new(),
            network: NetworkConfig::default(),
            streaming: StreamingConfig::default(),
            runtime_handlers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter directive: `info`, `debug`, `yonggi=debug,tower=warn`, ...
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
    /// `systemd` when systemd is the init system (`/run/systemd/system` exists), else `cgroupfs`.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    pub driver: CgroupDriver,
    /// Where containers of a pod without a cgroup parent go: a path with
    /// cgroupfs, a slice with systemd. Empty: `/yonggi` or `yonggi.slice`.
    pub default_parent: String,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            driver: CgroupDriver::Cgroupfs,
            default_parent: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// The platform picked from a multi-arch index, `os/arch[/variant]`.
    pub platform: String,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            platform: "linux/amd64".to_string(),
            max_concurrent_downloads: 3,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Endpoints tried in order before the registry itself, e.g. `http://127.0.0.1:5000`.
    pub mirrors: Vec<String>,
    /// Never contact the registry itself, only its mirrors (offline nodes, tests).
    pub mirrors_replace_upstream: bool,
    /// Speak plain HTTP to this registry. Loopback registries always may.
    pub plain_http: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// CNI configuration directory; the lexically first `.conflist`/`.conf` is used.
    pub cni_conf_dir: PathBuf,
    /// Directories searched for CNI plugin binaries, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Pod CIDR of the built-in bridge network, used until kubelet sends one.
    pub pod_cidr: String,
    /// Bridge device of the built-in network.
    pub bridge: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            pod_cidr: "10.244.0.0/24".to_string(),
            bridge: "yonggi0".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Address of the Exec/Attach/PortForward server; port 0 picks a free one.
    pub address: SocketAddr,
    /// Lifetime of a streaming URL's token.
    pub token_ttl_seconds: u64,
    /// A stream with no traffic for this long is closed.
    pub idle_timeout_seconds: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_ttl_seconds: 60,
            idle_timeout_seconds: 4 * 60 * 60,
        }
    }
}

/// One configured runtime handler. Every handler runs pods the same way
/// today; the table exists so that a RuntimeClass naming it is accepted, and
/// so that per-handler settings have a home.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandlerConfig {}

impl Config {
    /// Loads `path`; `required` says whether a missing file is an error.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Config::parse(&text, path)
    }

    /// Parses and validates a config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        for (key, value) in [
            ("root", &self.root),
            ("state_dir", &self.state_dir),
            ("socket", &self.socket),
            ("network.cni_conf_dir", &self.network.cni_conf_dir),
        ] {
            if !value.is_absolute() {
                return Err(invalid(
                    key,
                    format!("{} is not an absolute path", value.display()),
                ));
            }
        }
        if let Some(dir) = self.network.cni_bin_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(invalid(
                "network.cni_bin_dirs",
                format!("{} is not an absolute path", dir.display()),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("{:?}: {e}", self.log.level)));
        }
        let driver = crate::runtime::cgroup::Driver::from(self.effective_cgroup_driver());
        if let Err(e) = driver.pod_cgroup(&self.default_cgroup_parent()) {
            return Err(invalid("cgroup.default_parent", e.to_string()));
        }
        let platform: Vec<&str> = self.image.platform.split('/').collect();
        if !(2..=3).contains(&platform.len()) || platform.iter().any(|p| p.is_empty()) {
            return Err(invalid(
                "image.platform",
                format!("{:?} is not os/arch[/variant]", self.image.platform),
            ));
        }
        if self.image.max_concurrent_downloads == 0 {
            return Err(invalid(
                "image.max_concurrent_downloads",
                "must be at least 1".to_string(),
            ));
        }
        for (host, registry) in &self.registries {
            let key = |field: &str| format!("registries.\"{host}\".{field}");
            if host.is_empty() || host.contains('/') {
                return Err(invalid(
                    &format!("registries.\"{host}\""),
                    "a registry is named by its host[:port]".to_string(),
                ));
            }
            for mirror in &registry.mirrors {
                if !(mirror.starts_with("http://") || mirror.starts_with("https://")) {
                    return Err(invalid(
                        &key("mirrors"),
                        format!("{mirror:?} must start with http:// or https://"),
                    ));
                }
            }
            if registry.mirrors_replace_upstream && registry.mirrors.is_empty() {
                return Err(invalid(
                    &key("mirrors_replace_upstream"),
                    "is true but no mirrors are listed".to_string(),
                ));
            }
        }
        if parse_cidr_list(&self.network.pod_cidr).is_none() {
            return Err(invalid(
                "network.pod_cidr",
                format!(
                    "{:?} is not an IP network like 10.244.0.0/24 (or an IPv4,IPv6 pair)",
                    self.network.pod_cidr
                ),
            ));
        }
        let bridge = &self.network.bridge;
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(invalid(
                "network.bridge",
                format!("{bridge:?} is not a valid interface name (1-15 characters)"),
            ));
        }
        for name in self.runtime_handlers.keys() {
            // RuntimeClass handlers are DNS labels.
            let label = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !label {
                return Err(invalid(
                    &format!("runtime_handlers.\"{name}\""),
                    "a handler name is a DNS label (a-z, 0-9, '-', at most 63)".to_string(),
                ));
            }
        }
        if self.streaming.token_ttl_seconds == 0 {
            return Err(invalid(
                "streaming.token_ttl_seconds",
                "must be at least 1".to_string(),
            ));
        }
        Ok(())
    }

    /// `cgroup.default_parent`, or the driver's default when it is empty.
    pub fn default_cgroup_parent(&self) -> String {
        match (
            self.cgroup.default_parent.as_str(),
            self.effective_cgroup_driver(),
        ) {
            ("", CgroupDriver::Systemd) => "yonggi.slice".to_string(),
            ("", _) => "/yonggi".to_string(),
            (parent, _) => parent.to_string(),
        }
    }

    /// The cgroup driver with `auto` resolved against the running system.
    pub fn effective_cgroup_driver(&self) -> CgroupDriver {
        match self.cgroup.driver {
            CgroupDriver::Auto if Path::new("/run/systemd/system").is_dir() => {
                CgroupDriver::Systemd
            }
            CgroupDriver::Auto => CgroupDriver::Cgroupfs,
            other => other,
        }
    }
}

/// Parses `a.b.c.d/n` or an IPv6 network; `None` when malformed.
pub fn parse_cidr(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = text.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// Parses kubelet's pod CIDR form: one network, or an IPv4 and an IPv6
/// network joined by a comma (dual stack). `None` when malformed.
pub fn parse_cidr_list(text: &str) -> Option<Vec<(std::net::IpAddr, u8)>> {
    let cidrs: Vec<_> = text
        .split(',')
        .map(|c| parse_cidr(c.trim()))
        .collect::<Option<_>>()?;
    let v4 = cidrs.iter().filter(|(a, _)| a.is_ipv4()).count();
    (v4 <= 1 && cidrs.len() - v4 <= 1).then_some(cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/yonggi/test.toml"))
    }

    #[test]
    fn shipped_manifest_matches_built_in_defaults() {
        let text = include_str!("../manifests/config.toml");
        let parsed = parse(text).expect("manifests/config.toml must parse");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").expect("empty config"), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[log]\nlevle = \"debug\"\n").expect_err("typo must fail");
        let text = err.to_string();
        assert!(text.contains("levle"), "{text}");
        assert!(text.contains("/etc/yonggi/test.toml"), "{text}");
    }

    #[test]
    fn bad_values_are_named() {
        for (toml, key) in [
            ("[log]\nformat = \"xml\"\n", "format"),
            ("[cgroup]\ndriver = \"lxc\"\n", "driver"),
            (
                "[cgroup]\ndriver = \"systemd\"\ndefault_parent = \"/yonggi\"\n",
                "cgroup.default_parent",
            ),
            (
                "[cgroup]\ndefault_parent = \"/a/../b\"\n",
                "cgroup.default_parent",
            ),
            ("root = \"relative/path\"\n", "root"),
            ("[image]\nplatform = \"amd64\"\n", "image.platform"),
            (
                "[network]\npod_cidr = \"10.0.0.0/40\"\n",
                "network.pod_cidr",
            ),
            (
                "[registries.\"docker.io\"]\nmirrors = [\"127.0.0.1:5000\"]\n",
                "registries.\"docker.io\".mirrors",
            ),
            (
                "[registries.\"docker.io\"]\nmirrors_replace_upstream = true\n",
                "mirrors_replace_upstream",
            ),
            (
                "[runtime_handlers.Bad_Name]\n",
                "runtime_handlers.\"Bad_Name\"",
            ),
        ] {
            let err = parse(toml).expect_err(toml);
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn registries_parse() {
        let config = parse(
            "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\nmirrors_replace_upstream = true\n",
        )
        .expect("valid registries");
        let registry = &config.registries["registry.k8s.io"];
        assert_eq!(registry.mirrors, vec!["http://127.0.0.1:5000".to_string()]);
        assert!(registry.mirrors_replace_upstream);
    }

    #[test]
    fn cidr_parsing() {
        assert!(parse_cidr("10.1.0.0/16").is_some());
        assert!(parse_cidr("fd00::/64").is_some());
        assert!(parse_cidr("10.1.0.0").is_none());
        assert!(parse_cidr("10.1.0.0/33").is_none());
        assert_eq!(
            parse_cidr_list("10.1.0.0/16, fd00::/64").map(|l| l.len()),
            Some(2)
        );
        assert!(parse_cidr_list("10.1.0.0/16,10.2.0.0/16").is_none());
        assert!(parse_cidr_list("10.1.0.0/16,").is_none());
    }
}
