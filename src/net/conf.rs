//! Which CNI network a pod joins: the lexically first config file in the conf
//! dir, or yonggi's built-in bridge network when there is none, and where each
//! plugin's binary lives.
//!
//! Configs are kept as JSON values, not typed structs: plugins own their
//! fields, and the runtime must hand every unknown key through untouched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::NetError;
use crate::config::NetworkConfig;

/// The built-in network, shipped so an operator can also copy it into the
/// conf dir by hand. Bridge name, subnet and IPAM dir are filled in at use.
/// `ipMasq` is off: yonggi adds one masquerade rule for the CIDR (masq.rs).
const DEFAULT_CONFLIST: &str = include_str!("../../manifests/cni/yonggi-default.conflist");

/// The extensions libcni and kubelet's runtimes accept, and no others:
/// editors' backup files (`10-net.conflist~`) must not be picked up.
const EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// A network configuration list, as executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NetworkList {
    pub(crate) name: String,
    #[serde(rename = "cniVersion")]
    pub(crate) cni_version: String,
    /// Each plugin's configuration object exactly as configured.
    pub(crate) plugins: Vec<Map<String, Value>>,
    /// Where it came from: a file path, or `built-in` for the default.
    pub(crate) source: String,
}

impl NetworkList {
    /// The `type` of each plugin, in chain order.
    pub(crate) fn plugin_types(&self) -> impl Iterator<Item = &str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
    }

    /// Every plugin binary the chain needs: each plugin's `type` and the
    /// IPAM plugin it delegates to (`ipam.type`), in chain order, once each.
    pub(crate) fn required_plugins(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = Vec::new();
        for plugin in &self.plugins {
            let own = plugin.get("type").and_then(Value::as_str);
            let ipam = plugin
                .get("ipam")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str);
            for kind in [own, ipam].into_iter().flatten() {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
        }
        kinds
    }

    pub(crate) fn is_builtin(&self) -> bool {
        self.source == BUILTIN_SOURCE
    }
}

pub(crate) const BUILTIN_SOURCE: &str = "built-in";

/// The config file CNI would use from `dir`, or `None` when it holds none
/// (a missing dir counts as empty: a fresh node has no /etc/cni/net.d).
pub(crate) fn select_file(dir: &Path) -> Result<Option<PathBuf>, NetError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(NetError::ConfRead {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| NetError::ConfRead {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        // Follow symlinks (config management links files in); skip dirs.
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    // Byte order of the file names, as Go's sort.Strings gives libcni.
    files.sort();
    Ok(files.into_iter().next())
}

/// Loads the network in effect: the first file of the conf dir, else the
/// built-in network on `pod_cidr` with its IPAM state under `ipam_dir`.
pub(crate) fn load(
    network: &NetworkConfig,
    pod_cidr: &str,
    ipam_dir: &Path,
) -> Result<NetworkList, NetError> {
    match select_file(&network.cni_conf_dir)? {
        Some(path) => load_file(&path),
        None => default_network(&network.bridge, pod_cidr, ipam_dir),
    }
}

/// Parses one config file; a single-plugin `.conf`/`.json` becomes a list of one.
pub(crate) fn load_file(path: &Path) -> Result<NetworkList, NetError> {
    let text = std::fs::read(path).map_err(|source| NetError::ConfRead {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| NetError::ConfInvalid {
        source_name: path.display().to_string(),
        message,
    };
    let value: Value =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let is_list = path.extension().and_then(|e| e.to_str()) == Some("conflist");
    parse(value, is_list, &path.display().to_string())
}

/// Validates a config value. A list has `name`, `cniVersion` and `plugins`;
/// a single plugin config is wrapped into a list carrying its name and version.
pub(crate) fn parse(value: Value, is_list: bool, source: &str) -> Result<NetworkList, NetError> {
    let invalid = |message: String| NetError::ConfInvalid {
        source_name: source.to_string(),
        message,
    };
    let Value::Object(mut top) = value else {
        return Err(invalid("not a JSON object".to_string()));
    };
    let name = take_string(&top, "name").ok_or_else(|| invalid("no \"name\"".to_string()))?;
    let cni_version =
        take_string(&top, "cniVersion").ok_or_else(|| invalid("no \"cniVersion\"".to_string()))?;
    let plugins = if is_list {
        match top.remove("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins
                .into_iter()
                .map(|p| match p {
                    Value::Object(p) => Ok(p),
                    _ => Err(invalid("a plugin is not a JSON object".to_string())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(invalid("\"plugins\" is missing or empty".to_string())),
        }
    } else {
        vec![top]
    };
    for plugin in &plugins {
        let kind = take_string(plugin, "type")
            .ok_or_else(|| invalid("a plugin has no \"type\"".to_string()))?;
        let ipam = plugin
            .get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str);
        // A type names a file in the bin dirs: it must not walk out of them.
        for kind in [Some(kind.as_str()), ipam].into_iter().flatten() {
            if kind.is_empty() || kind.contains('/') || kind.starts_with('.') {
                return Err(invalid(format!("plugin type {kind:?} is not a file name")));
            }
        }
    }
    Ok(NetworkList {
        name,
        cni_version,
        plugins,
        source: source.to_string(),
    })
}

fn take_string(object: &Map<String, Value>, key: &str) -> Option<String> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The built-in network rendered for this node: the shipped conflist with
/// the configured bridge, the pod CIDR (v4 or v6) and yonggi's own IPAM dir,
/// so its reservations never mix with another runtime's /var/lib/cni.
pub(crate) fn default_network(
    bridge: &str,
    pod_cidr: &str,
    ipam_dir: &Path,
) -> Result<NetworkList, NetError> {
    let bad = |message: String| NetError::ConfInvalid {
        source_name: BUILTIN_SOURCE.to_string(),
        message,
    };
    let cidrs = crate::config::parse_cidr_list(pod_cidr)
        .ok_or_else(|| bad(format!("pod CIDR {pod_cidr:?} is not an IP network")))?;
    // Dual stack: one range set and one default route per family.
    let ranges: Vec<Value> = pod_cidr
        .split(',')
        .map(|c| serde_json::json!([{ "subnet": c.trim() }]))
        .collect();
    let routes: Vec<Value> = cidrs
        .iter()
        .map(|(addr, _)| {
            let dst = if addr.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            serde_json::json!({ "dst": dst })
        })
        .collect();
    let value: Value = serde_json::from_str(DEFAULT_CONFLIST)
        .map_err(|e| bad(format!("shipped conflist is not JSON: {e}")))?;
    let mut list = parse(value, true, BUILTIN_SOURCE)?;
    let bridge_plugin = list
        .plugins
        .iter_mut()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("bridge"))
        .ok_or_else(|| bad("shipped conflist has no bridge plugin".to_string()))?;
    bridge_plugin.insert("bridge".to_string(), Value::from(bridge));
    bridge_plugin.insert(
        "ipam".to_string(),
        serde_json::json!({
            "type": "host-local",
            "ranges": ranges,
            "routes": routes,
            "dataDir": ipam_dir.display().to_string(),
        }),
    );
    Ok(list)
}

/// Finds a plugin's executable: the first bin dir holding it wins.
pub(crate) fn find_plugin(bin_dirs: &[PathBuf], kind: &str) -> Result<PathBuf, NetError> {
    use std::os::unix::fs::PermissionsExt;
    bin_dirs
        .iter()
        .map(|dir| dir.join(kind))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| NetError::PluginNotFound {
            plugin: kind.to_string(),
            dirs: bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write conf");
    }

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge","bridge":"b0","x":{"keep":1}}]}"#;

    #[test]
    fn lexically_first_config_wins_and_others_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(select_file(dir.path()).expect("empty dir"), None);
        assert_eq!(
            select_file(&dir.path().join("missing")).expect("missing dir"),
            None
        );
        write(dir.path(), "README", "not a config");
        write(dir.path(), "05-old.conflist~", "backup");
        write(dir.path(), "99-last.conflist", LIST);
        write(
            dir.path(),
            "20-single.conf",
            r#"{"cniVersion":"1.0.0","name":"s","type":"ptp"}"#,
        );
        std::fs::create_dir(dir.path().join("01-dir.conf")).expect("mkdir");
        assert_eq!(
            select_file(dir.path()).expect("select"),
            Some(dir.path().join("20-single.conf"))
        );
        write(dir.path(), "10-json.json", LIST);
        assert_eq!(
            select_file(dir.path()).expect("select"),
            Some(dir.path().join("10-json.json"))
        );
    }

    #[test]
    fn single_conf_is_wrapped_and_unknown_keys_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "10-one.conf",
            r#"{"cniVersion":"0.4.0","name":"one","type":"ptp","mtu":1400}"#,
        );
        let list = load_file(&dir.path().join("10-one.conf")).expect("conf");
        assert_eq!(list.name, "one");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0]["mtu"], 1400);
        write(dir.path(), "20-list.conflist", LIST);
        let list = load_file(&dir.path().join("20-list.conflist")).expect("list");
        assert_eq!(list.plugin_types().collect::<Vec<_>>(), vec!["bridge"]);
        assert_eq!(list.plugins[0]["x"]["keep"], 1);
    }

    #[test]
    fn invalid_configs_are_named() {
        for (text, is_list, what) in [
            (r#"[1]"#, true, "object"),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
                true,
                "name",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"x"}]}"#,
                true,
                "cniVersion",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","plugins":[]}"#,
                true,
                "plugins",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"a":1}]}"#,
                true,
                "type",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","type":"../sh"}"#,
                false,
                "file name",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","type":"bridge","ipam":{"type":"/bin/sh"}}"#,
                false,
                "file name",
            ),
        ] {
            let value: Value = serde_json::from_str(text).expect("json");
            let err = parse(value, is_list, "/etc/cni/net.d/x").expect_err(text);
            let message = err.to_string();
            assert!(matches!(err, NetError::ConfInvalid { .. }), "{text}");
            assert!(message.contains(what), "{text}: {message}");
            assert!(message.contains("/etc/cni/net.d/x"), "{message}");
        }
    }

    #[test]
    fn default_network_renders_bridge_cidr_and_ipam_dir() {
        let list = default_network("ygt0", "10.77.3.0/24", Path::new("/tmp/ipam")).expect("v4");
        assert!(list.is_builtin());
        assert_eq!(list.cni_version, "1.0.0");
        assert_eq!(
            list.plugin_types().collect::<Vec<_>>(),
            vec!["bridge", "portmap"]
        );
        assert_eq!(
            list.required_plugins(),
            vec!["bridge", "host-local", "portmap"]
        );
        let bridge = &list.plugins[0];
        assert_eq!(bridge["bridge"], "ygt0");
        assert_eq!(bridge["isGateway"], true);
        // yonggi masquerades the whole CIDR once (masq.rs), not per pod.
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.77.3.0/24");
        assert_eq!(bridge["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/ipam");
        assert_eq!(list.plugins[1]["capabilities"]["portMappings"], true);

        let list = default_network("ygt0", "fd00:77::/64", Path::new("/x")).expect("v6");
        assert_eq!(list.plugins[0]["ipam"]["routes"][0]["dst"], "::/0");
        assert!(default_network("ygt0", "nonsense", Path::new("/x")).is_err());

        let list = default_network("ygt0", "10.7.0.0/24,fd00:7::/64", Path::new("/x"))
            .expect("dual stack");
        let ipam = &list.plugins[0]["ipam"];
        assert_eq!(ipam["ranges"][0][0]["subnet"], "10.7.0.0/24");
        assert_eq!(ipam["ranges"][1][0]["subnet"], "fd00:7::/64");
        assert_eq!(ipam["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(ipam["routes"][1]["dst"], "::/0");
    }

    #[test]
    fn shipped_conflist_matches_config_defaults() {
        // The file doubles as a ready-to-copy config for the default settings.
        let value: Value = serde_json::from_str(DEFAULT_CONFLIST).expect("json");
        let shipped = parse(value, true, BUILTIN_SOURCE).expect("shipped");
        let defaults = NetworkConfig::default();
        let rendered = default_network(
            &defaults.bridge,
            &defaults.pod_cidr,
            Path::new("/var/lib/yonggi/net/ipam"),
        )
        .expect("render");
        assert_eq!(shipped, rendered);
    }

    #[test]
    fn plugins_are_found_in_order() {
        let a = tempfile::tempdir().expect("a");
        let b = tempfile::tempdir().expect("b");
        let exec = |path: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        exec(&b.path().join("bridge"));
        std::fs::write(a.path().join("bridge"), "not executable").expect("write");
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find_plugin(&dirs, "bridge").expect("found"),
            b.path().join("bridge")
        );
        exec(&a.path().join("bridge"));
        assert_eq!(
            find_plugin(&dirs, "bridge").expect("found"),
            a.path().join("bridge")
        );
        let err = find_plugin(&dirs, "nope").expect_err("missing");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
