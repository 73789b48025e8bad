//! The daemon itself: serving, instance lock, shutdown, config errors.

mod support;

use std::process::Command;

use k8s_cri::v1 as cri;
use nix::sys::signal::Signal;
use support::Daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_version_status_and_runtime_config() {
    let daemon = Daemon::start();
    let mut rt = daemon.runtime().await;

    let version = rt
        .version(cri::VersionRequest::default())
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(version.runtime_name, "yonggi");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

    let status = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let conditions = status.status.expect("runtime status").conditions;
    let runtime_ready = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .expect("RuntimeReady");
    assert!(runtime_ready.status);
    let network_ready = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    if !network_ready.status {
        assert!(
            !network_ready.reason.is_empty(),
            "NetworkReady false needs a reason"
        );
        assert!(
            !network_ready.message.is_empty(),
            "NetworkReady false needs a message"
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(status.info.get("config").expect("verbose info has config"))
            .expect("config is JSON");
    assert_eq!(
        config["stateDir"].as_str(),
        Some(daemon.dir.path().join("run").to_str().expect("utf-8 path"))
    );

    let quiet = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    assert!(quiet.info.is_empty(), "info only when verbose");

    let rc = rt
        .runtime_config(cri::RuntimeConfigRequest::default())
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(
        rc.linux.expect("linux config").cgroup_driver(),
        cri::CgroupDriver::Cgroupfs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_driver_is_reported_when_configured() {
    let daemon = Daemon::start_with(support::DaemonOptions {
        extra_config: "[cgroup]\ndriver = \"systemd\"\n".to_string(),
    });
    let rc = daemon
        .runtime()
        .await
        .runtime_config(cri::RuntimeConfigRequest::default())
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(
        rc.linux.expect("linux").cgroup_driver(),
        cri::CgroupDriver::Systemd
    );
}

fn pod_cidr_of(status: &cri::StatusResponse) -> String {
    let config: serde_json::Value =
        serde_json::from_str(&status.info["config"]).expect("config JSON");
    config["podCIDR"].as_str().expect("podCIDR").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidr_is_stored_durably() {
    let mut daemon = Daemon::start();
    {
        let mut rt = daemon.runtime().await;
        let update = |cidr: &str| cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: cidr.to_string(),
                }),
            }),
        };
        let err = rt
            .update_runtime_config(update("not-a-cidr"))
            .await
            .expect_err("bad CIDR");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        rt.update_runtime_config(update("10.77.0.0/16"))
            .await
            .expect("UpdateRuntimeConfig");
    }
    // SIGKILL: nothing gets a chance to flush; the store must already hold it.
    daemon.stop_with(Signal::SIGKILL);
    daemon.spawn();
    let status = daemon
        .runtime()
        .await
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    assert_eq!(pod_cidr_of(&status), "10.77.0.0/16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbuilt_rpcs_answer_unimplemented_by_name() {
    let daemon = Daemon::start();
    let mut rt = daemon.runtime().await;
    let err = rt
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .expect_err("CheckpointContainer is not built");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
    // The daemon is still healthy afterwards.
    rt.version(cri::VersionRequest::default())
        .await
        .expect("Version after error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_on_the_same_socket_refuses() {
    let daemon = Daemon::start();
    let output = Command::new(support::daemon::yonggi_bin())
        .arg("serve")
        .arg("--config")
        .arg(&daemon.config_path)
        .output()
        .expect("run second yonggi");
    assert!(!output.status.success(), "second instance must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another yonggi instance"), "{stderr}");
    assert!(
        stderr.contains(&daemon.pid().to_string()),
        "names the holder: {stderr}"
    );
    // The first instance keeps serving.
    daemon
        .runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .expect("first instance still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_the_socket_and_exits_zero() {
    let mut daemon = Daemon::start();
    assert!(daemon.socket.exists());
    let status = daemon.stop_with(Signal::SIGTERM);
    assert!(status.success(), "exit status {status}");
    assert!(!daemon.socket.exists(), "socket removed on SIGTERM");
    assert!(daemon.log().contains("SIGTERM"), "shutdown is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_after_a_crash_is_replaced() {
    let mut daemon = Daemon::start();
    daemon.stop_with(Signal::SIGKILL);
    assert!(daemon.socket.exists(), "a killed daemon leaves its socket");
    daemon.spawn();
    daemon
        .runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .expect("restarted daemon serves");
}

fn serve_with_config(text: &str) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(support::daemon::yonggi_bin())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run yonggi");
    (output, dir)
}

#[test]
fn bad_config_names_the_key_and_the_file() {
    for (text, key) in [
        ("[log]\nlevle = \"debug\"\n", "levle"),
        ("[cgroup]\ndriver = \"lxc\"\n", "driver"),
        ("root = \"not/absolute\"\n", "root"),
    ] {
        let (output, _dir) = serve_with_config(text);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{text}: {stderr}");
        assert!(stderr.contains("bad.toml"), "{text}: {stderr}");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let output = Command::new(support::daemon::yonggi_bin())
        .args(["serve", "--config", "/nonexistent/yonggi.toml"])
        .output()
        .expect("run yonggi");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/yonggi.toml"));
}

#[test]
fn corrupt_store_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(
        root.join("metadata.redb"),
        b"garbage, not a database ".repeat(64),
    )
    .expect("garbage");
    let config = format!(
        "root = \"{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\n",
        root.display(),
        dir.path().join("run").display(),
        dir.path().join("run/yonggi.sock").display()
    );
    let (output, _config_dir) = serve_with_config(&config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("metadata store"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
