//! The streaming server over real sockets: SPDY/3.1 and WebSocket clients,
//! exec with and without tty, attach, port forward, tokens, teardown. The
//! backend runs host processes (tests/stream/host_backend.rs): these tests
//! are about the wire protocols, not about containers.

#[path = "stream/crictl.rs"]
mod crictl;
#[path = "stream/host_backend.rs"]
mod host_backend;
#[path = "stream/spdy.rs"]
mod spdy;
#[path = "stream/spdy_client.rs"]
mod spdy_client;
mod support;
#[path = "stream/websocket.rs"]
mod websocket;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use yonggi::config::StreamingConfig;
use yonggi::stream::{ExecRequest, Service};

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30s"))
}

pub async fn service_with(ttl: u64, idle: u64) -> Service {
    let config = StreamingConfig {
        address: "127.0.0.1:0".parse().expect("address"),
        token_ttl_seconds: ttl,
        idle_timeout_seconds: idle,
    };
    Service::start(&config, Arc::new(host_backend::HostBackend))
        .await
        .expect("start streaming service")
}

pub async fn service() -> Service {
    service_with(60, 600).await
}

pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

pub fn exec(cmd: Vec<String>, tty: bool, stdin: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd,
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// Waits until `pid` is gone and the service has no session left.
pub async fn assert_torn_down(service: &Service, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive && service.active_sessions() == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} alive: {alive}, sessions: {}",
            service.active_sessions()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn http_status(url: &str, extra_headers: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_at(rest.find('/').expect("path"));
    let mut tcp = TcpStream::connect(authority).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\n{extra_headers}Content-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    spdy_client::read_http_head(&mut tcp).await.0
}

// --------------------------------------------------------------- tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reused_expired_and_misrouted_tokens_get_404() {
    let service = service_with(1, 600).await;
    let base = format!("http://{}", service.address());
    assert_eq!(
        http_status(
            &format!("{base}/exec/{}", "ab".repeat(32)),
            spdy::SPDY_UPGRADE
        )
        .await,
        404
    );
    assert_eq!(
        http_status(&format!("{base}/exec/"), spdy::SPDY_UPGRADE).await,
        404
    );
    assert_eq!(
        http_status(&format!("{base}/other/x"), spdy::SPDY_UPGRADE).await,
        404
    );

    // Used once for a real session, the token is gone.
    let url = service
        .exec_url(exec(sh("echo once"), false, false))
        .await
        .expect("url");
    let mut client = spdy_client::connect(&url, &["v4.channel.k8s.io"])
        .await
        .expect("upgrade");
    client.open(&[("streamType", "error")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    client.open(&[("streamType", "stderr")]).await;
    assert_eq!(
        within("exec", client.collect()).await.text(stdout),
        "once\n"
    );
    assert_eq!(http_status(&url, spdy::SPDY_UPGRADE).await, 404);

    // An exec token at the attach endpoint is refused (and spent).
    let url = service
        .exec_url(exec(sh("true"), false, false))
        .await
        .expect("url");
    assert_eq!(
        http_status(&url.replace("/exec/", "/attach/"), spdy::SPDY_UPGRADE).await,
        404
    );
    assert_eq!(http_status(&url, spdy::SPDY_UPGRADE).await, 404);

    // Past its TTL the token is refused.
    let url = service
        .exec_url(exec(sh("true"), false, false))
        .await
        .expect("url");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(http_status(&url, spdy::SPDY_UPGRADE).await, 404);

    // A valid token without an upgrade is a bad request, and spent.
    let url = service
        .exec_url(exec(sh("true"), false, false))
        .await
        .expect("url");
    assert_eq!(http_status(&url, "").await, 400);
    assert_eq!(http_status(&url, spdy::SPDY_UPGRADE).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_container_gets_no_url() {
    let service = service().await;
    let mut request = exec(sh("true"), false, false);
    request.container_id = "missing".into();
    let err = service
        .exec_url(request)
        .await
        .expect_err("unknown container");
    assert!(matches!(
        err,
        yonggi::stream::StreamError::Backend(yonggi::stream::BackendError::ContainerNotFound(_))
    ));
}

// ------------------------------------------------------------ CRI calls

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_streaming_calls_validate_and_resolve() {
    let daemon = support::Daemon::start_with(support::DaemonOptions {
        extra_config: "[streaming]\ntoken_ttl_seconds = 30\nidle_timeout_seconds = 60\n".into(),
    });
    let mut rt = daemon.runtime().await;
    let exec = |container_id: &str, tty: bool, stderr: bool, cmd: &[&str]| cri::ExecRequest {
        container_id: container_id.into(),
        cmd: cmd.iter().map(|c| c.to_string()).collect(),
        tty,
        stdin: false,
        stdout: true,
        stderr,
    };
    for (request, what) in [
        (exec("", false, true, &["ls"]), "empty container id"),
        (exec("abc", false, true, &[]), "empty cmd"),
        (exec("abc", true, true, &["ls"]), "tty with stderr"),
    ] {
        let status = rt.exec(request).await.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
    }
    let mut no_streams = exec("abc", false, false, &["ls"]);
    no_streams.stdout = false;
    let status = rt.exec(no_streams).await.expect_err("no streams");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // The daemon has no container service yet: every container is unknown.
    let status = rt
        .exec(exec("abc", false, true, &["ls"]))
        .await
        .expect_err("unknown container");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = rt
        .attach(cri::AttachRequest {
            container_id: "abc".into(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .expect_err("unknown container");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "pod".into(),
            port: vec![70000],
        })
        .await
        .expect_err("bad port");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "pod".into(),
            port: vec![80],
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(status.code(), tonic::Code::NotFound);
}
