//! One CNI plugin execution (spec 1.0, section 2): environment, the derived
//! execution config on stdin, the result or error on stdout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::NetError;

/// A plugin that does not answer in this long is killed: a hung plugin must
/// not hold a sandbox RPC forever (kubelet retries).
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
    Check,
}

impl Command {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        }
    }
}

/// The per-attachment parameters, the same for every plugin of the chain.
#[derive(Debug, Clone)]
pub(crate) struct Invocation<'a> {
    pub(crate) container_id: &'a str,
    /// Empty for a DEL whose namespace is already gone, as the spec allows.
    pub(crate) netns: &'a str,
    pub(crate) ifname: &'a str,
    pub(crate) args: &'a str,
    pub(crate) bin_dirs: &'a [PathBuf],
}

/// Builds a plugin's stdin from its configuration object (spec: "Deriving
/// execution configuration"): the list's `name` and `cniVersion`, the
/// previous result, and `runtimeConfig` holding only the capabilities the
/// plugin declares; the `capabilities` key itself is not passed on.
pub(crate) fn execution_config(
    plugin: &Map<String, Value>,
    name: &str,
    cni_version: &str,
    runtime_config: &Map<String, Value>,
    prev_result: Option<&Value>,
) -> Value {
    let mut config = plugin.clone();
    let capabilities = config.remove("capabilities");
    config.insert("name".to_string(), Value::from(name));
    config.insert("cniVersion".to_string(), Value::from(cni_version));
    let wanted: Map<String, Value> = runtime_config
        .iter()
        .filter(|(key, _)| {
            capabilities
                .as_ref()
                .and_then(|c| c.get(key.as_str()))
                .and_then(Value::as_bool)
                == Some(true)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !wanted.is_empty() {
        config.insert("runtimeConfig".to_string(), Value::Object(wanted));
    }
    match prev_result {
        Some(prev) => {
            config.insert("prevResult".to_string(), prev.clone());
        }
        None => {
            config.remove("prevResult");
        }
    }
    Value::Object(config)
}

/// The error object a failing plugin prints (spec: "Error").
#[derive(Debug, Deserialize)]
struct ErrorResult {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Runs `kind` with `stdin`; returns its parsed stdout (the result for ADD,
/// `Value::Null` when a DEL or CHECK prints nothing).
pub(crate) async fn exec(
    path: &Path,
    kind: &str,
    command: Command,
    inv: &Invocation<'_>,
    stdin: &Value,
) -> Result<Value, NetError> {
    let started = std::time::Instant::now();
    let cni_path = std::env::join_paths(inv.bin_dirs).unwrap_or_default();
    let input = serde_json::to_vec(stdin).map_err(|e| NetError::BadResult {
        plugin: kind.to_string(),
        command: command.as_str(),
        message: format!("cannot encode its config: {e}"),
    })?;
    let spawn_err = |source| NetError::PluginExec {
        plugin: kind.to_string(),
        path: path.to_path_buf(),
        source,
    };
    // The daemon's own environment is kept: plugins run iptables and friends
    // through PATH.
    let mut child = tokio::process::Command::new(path)
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits before reading all of stdin reports its own
        // error on stdout; a broken pipe here is not the story.
        let _ = pipe.write_all(&input).await;
    }
    let output = match tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.map_err(spawn_err)?,
        Err(_) => {
            return Err(NetError::PluginTimeout {
                plugin: kind.to_string(),
                command: command.as_str(),
                seconds: PLUGIN_TIMEOUT.as_secs(),
            });
        }
    };
    tracing::debug!(
        plugin = kind,
        command = command.as_str(),
        container_id = inv.container_id,
        duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        status = %output.status,
        "cni plugin ran"
    );
    if !output.status.success() {
        if let Ok(err) = serde_json::from_slice::<ErrorResult>(&output.stdout) {
            return Err(NetError::PluginFailed {
                plugin: kind.to_string(),
                command: command.as_str(),
                code: err.code,
                msg: err.msg,
                details: err.details,
            });
        }
        return Err(NetError::PluginCrashed {
            plugin: kind.to_string(),
            command: command.as_str(),
            status: output.status.to_string(),
            output: tail(&output.stdout, &output.stderr),
        });
    }
    if output.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&output.stdout).map_err(|e| NetError::BadResult {
        plugin: kind.to_string(),
        command: command.as_str(),
        message: format!("stdout is not JSON: {e}"),
    })
}

/// The last bit of what a crashed plugin printed, for the error message.
fn tail(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(stdout).trim(),
        String::from_utf8_lossy(stderr).trim()
    );
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(511)
        .map(|(i, _)| i)
        .unwrap_or(0);
    text[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let runtime = object(json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1}
        }));
        let portmap = object(
            json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}),
        );
        let config = execution_config(
            &portmap,
            "net",
            "1.0.0",
            &runtime,
            Some(&json!({"ips": []})),
        );
        assert_eq!(config["name"], "net");
        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(config["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(config["runtimeConfig"].get("bandwidth").is_none());
        assert!(config.get("capabilities").is_none());
        assert_eq!(config["prevResult"], json!({"ips": []}));

        let bridge = object(json!({"type": "bridge", "bridge": "b0", "prevResult": "stale"}));
        let config = execution_config(&bridge, "net", "1.0.0", &runtime, None);
        assert!(config.get("runtimeConfig").is_none());
        assert!(config.get("prevResult").is_none());
        assert_eq!(config["bridge"], "b0");
    }

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(2000) + "the end";
        let t = tail(long.as_bytes(), b"");
        assert!(t.ends_with("the end"));
        assert_eq!(t.chars().count(), 512);
    }
}
