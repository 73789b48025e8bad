//! The benchmark client (`yonggi-bench run`) against a real daemon: a short
//! run (N=2, P=2) must finish with every row either measured or marked
//! UNIMPLEMENTED by the daemon, never failed, and leave no pod behind.
//! Behaviour only; the numbers are not judged here.

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::net::TestNetwork;
use support::{Daemon, DaemonOptions, Registry};
use yonggi::testimages::Set;
use yonggi::testimages::catalog::{self, names};

/// Removes the (empty) cgroup `name` at the top of every hierarchy, deepest
/// directories first.
fn remove_cgroup_tree(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let top = hierarchy.path().join(name);
        if top.is_dir() {
            remove_dirs(&top);
        }
    }
}

fn remove_dirs(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_measures_or_names_what_is_unimplemented_and_leaves_nothing() {
    support::daemon::require_root();
    let registry = Registry::start();
    let mut images = Vec::new();
    for name in [names::BUSYBOX, names::IMAGE_1] {
        images.extend(catalog::find(Set::All, name, "latest").expect("test images"));
    }
    registry.push(&images).await;
    let network = TestNetwork::new();
    let daemon = Daemon::start_with(DaemonOptions {
        extra_config: format!(
            "{}{}",
            network.config_toml(),
            registry.mirror_config("docker.io")
        ),
    });
    let out = daemon.dir.path().join("bench.json");
    let cgroup = format!("yonggi-bench-test-{}", std::process::id());
    let status = Command::new(env!("CARGO_BIN_EXE_yonggi-bench"))
        .arg("run")
        .args(["--name", "yonggi"])
        .arg("--endpoint")
        .arg(format!("unix://{}", daemon.socket.display()))
        // No --daemon-pid: the bench finds the socket's owner itself.
        .arg("--helper-match")
        .arg(daemon.dir.path())
        .args(["--lifecycles", "2", "--parallel", "2", "--concurrency", "2"])
        .args(["--image", "docker.io/yonggi-test/busybox:latest"])
        // A small image stands in for the 100 MB one: the pull path is the same.
        .args(["--big-image", "docker.io/yonggi-test/image-1:latest"])
        .args(["--cgroup-parent", &format!("/{cgroup}")])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run yonggi-bench");
    remove_cgroup_tree(&cgroup);
    let text = std::fs::read_to_string(&out).expect("results written");
    let run: Value = serde_json::from_str(&text).expect("results are JSON");
    assert!(
        status.success(),
        "yonggi-bench failed: {text}\ndaemon log:\n{}",
        daemon.log()
    );
    assert_eq!(run["runtime"], "yonggi");
    assert!(
        run["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("yonggi ")),
        "{}",
        run["version"]
    );
    let rows = run["rows"].as_array().expect("rows");
    let keys: Vec<&str> = rows.iter().filter_map(|r| r["key"].as_str()).collect();
    for key in [
        "mem.idle",
        "pull.big",
        "seq.RunPodSandbox.p50",
        "seq.StopContainer.p99",
        "seq.lifecycle.p95",
        "par.start",
        "mem.helper_pss",
        "par.teardown",
        "leftover",
    ] {
        assert!(keys.contains(&key), "no row {key} in {keys:?}");
    }
    for row in rows {
        let value = &row["value"];
        if let Some(n) = value.get("Num").and_then(Value::as_f64) {
            assert!(n >= 0.0, "{row}");
        } else {
            let rpc = value
                .get("Unimplemented")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("neither measured nor unimplemented: {row}"));
            assert!(
                rpc.chars().all(char::is_alphanumeric) && !rpc.is_empty(),
                "{row}"
            );
        }
    }
    // The daemon's memory is always measurable (so its pid was found), and
    // a clean run leaves no pod.
    let value_of = |key: &str| {
        rows.iter()
            .find(|r| r["key"] == key)
            .map(|r| r["value"].clone())
            .expect("row")
    };
    assert!(
        value_of("mem.idle")["Num"]
            .as_f64()
            .is_some_and(|n| n > 1.0)
    );
    let leftover = value_of("leftover");
    assert!(
        leftover["Num"] == 0.0 || leftover.get("Unimplemented").is_some(),
        "{leftover}"
    );
}
