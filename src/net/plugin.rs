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
    let stdin_pipe = child.stdin.take();
    let feed = async move {
        if let Some(mut pipe) = stdin_pipe {
            // A plugin that exits before reading all of stdin reports its
            // own error on stdout; a broken pipe here is not the story.
            let _ = pipe.write_all(&input).await;
        }
    };
    // Written while the output is read, so neither side can block the other.
    let run = async { tokio::join!(feed, child.wait_with_output()).1 };
    let output = match tokio::time::timeout(PLUGIN_TIMEOUT, run).await {
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
    use std::path::PathBuf;

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

    /// A shell "plugin" that records its environment and stdin, then
    /// answers per command: a result, nothing, an error object, garbage.
    fn fake_plugin(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake");
        let script = format!(
            r#"#!/bin/sh
cat > {d}/stdin
env | grep '^CNI_' | sort > {d}/env
case "$CNI_COMMAND" in
  ADD) echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.1.2.3/24"}}]}}' ;;
  DEL) ;;
  CHECK) echo '{{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"no bridge"}}'; exit 1 ;;
  *) echo 'not json'; echo 'it broke' >&2; exit 2 ;;
esac
"#,
            d = dir.display()
        );
        std::fs::write(&path, script).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// `exec`, retried while the script is "text file busy": another test
    /// thread forking while a script was being written holds a copy of its
    /// write fd until that child execs.
    async fn exec_retrying(
        path: &Path,
        kind: &str,
        command: Command,
        inv: &Invocation<'_>,
        stdin: &Value,
    ) -> Result<Value, NetError> {
        for _ in 0..50 {
            match exec(path, kind, command, inv, stdin).await {
                Err(NetError::PluginExec { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
        exec(path, kind, command, inv, stdin).await
    }

    #[tokio::test]
    async fn exec_passes_env_and_stdin_and_reads_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = fake_plugin(dir.path());
        let bins = vec![dir.path().to_path_buf(), PathBuf::from("/usr/lib/cni")];
        let inv = Invocation {
            container_id: "c1",
            netns: "/run/netns/x",
            ifname: "eth0",
            args: "IgnoreUnknown=1;K8S_POD_NAME=p",
            bin_dirs: &bins,
        };
        let stdin = json!({"cniVersion": "1.0.0", "name": "n", "type": "fake"});
        let out = exec_retrying(&path, "fake", Command::Add, &inv, &stdin)
            .await
            .expect("ADD");
        assert_eq!(out["ips"][0]["address"], "10.1.2.3/24");
        let sent: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("stdin")).expect("stdin"))
                .expect("stdin is JSON");
        assert_eq!(sent, stdin);
        let env = std::fs::read_to_string(dir.path().join("env")).expect("env");
        for line in [
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p",
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=c1",
            "CNI_IFNAME=eth0",
            "CNI_NETNS=/run/netns/x",
            &format!("CNI_PATH={}:/usr/lib/cni", dir.path().display()),
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing in {env}");
        }

        let out = exec(&path, "fake", Command::Del, &inv, &stdin)
            .await
            .expect("DEL");
        assert!(out.is_null());

        match exec(&path, "fake", Command::Check, &inv, &stdin).await {
            Err(NetError::PluginFailed {
                plugin,
                command,
                code,
                msg,
                details,
            }) => {
                assert_eq!(
                    (
                        plugin.as_str(),
                        command,
                        code,
                        msg.as_str(),
                        details.as_str()
                    ),
                    ("fake", "CHECK", 7, "bad config", "no bridge")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_crashing_plugin_is_reported_with_its_output() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crash");
        std::fs::write(&path, "#!/bin/sh\necho 'panic: nil map' >&2\nexit 2\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bins = vec![dir.path().to_path_buf()];
        let inv = Invocation {
            container_id: "c1",
            netns: "",
            ifname: "eth0",
            args: "",
            bin_dirs: &bins,
        };
        let err = exec_retrying(&path, "crash", Command::Add, &inv, &json!({}))
            .await
            .expect_err("crash");
        match &err {
            NetError::PluginCrashed { plugin, output, .. } => {
                assert_eq!(plugin, "crash");
                assert!(output.contains("panic: nil map"), "{output}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let missing = exec(
            &dir.path().join("absent"),
            "absent",
            Command::Add,
            &inv,
            &json!({}),
        )
        .await
        .expect_err("absent");
        assert!(
            matches!(missing, NetError::PluginExec { .. }),
            "{missing:?}"
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(2000) + "the end";
        let t = tail(long.as_bytes(), b"");
        assert!(t.ends_with("the end"));
        assert_eq!(t.chars().count(), 512);
    }
}
