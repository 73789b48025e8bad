//! The streaming server over real sockets: SPDY/3.1 and WebSocket clients,
//! exec with and without tty, attach, port forward, tokens, teardown. The
//! backend runs host processes (tests/stream/host_backend.rs): these tests
//! are about the wire protocols, not about containers.

#[path = "stream/host_backend.rs"]
mod host_backend;
#[path = "stream/spdy_client.rs"]
mod spdy_client;
mod support;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use k8s_cri::v1 as cri;
use spdy_client::Event;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yonggi::config::StreamingConfig;
use yonggi::stream::{AttachRequest, ExecRequest, PortForwardRequest, Service};

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30s"))
}

async fn service_with(ttl: u64, idle: u64) -> Service {
    let config = StreamingConfig {
        address: "127.0.0.1:0".parse().expect("address"),
        token_ttl_seconds: ttl,
        idle_timeout_seconds: idle,
    };
    Service::start(&config, Arc::new(host_backend::HostBackend))
        .await
        .expect("start streaming service")
}

async fn service() -> Service {
    service_with(60, 600).await
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn exec(cmd: Vec<String>, tty: bool, stdin: bool) -> ExecRequest {
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
async fn assert_torn_down(service: &Service, pid: i32) {
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

async fn http_status(url: &str, extra_headers: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_at(rest.find('/').expect("path"));
    let mut tcp = TcpStream::connect(authority).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\n{extra_headers}Content-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    spdy_client::read_http_head(&mut tcp).await.0
}

// ---------------------------------------------------------------- SPDY

const SPDY_UPGRADE: &str =
    "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_exec_reports_output_and_non_zero_exit_code() {
    let service = service().await;
    let url = service
        .exec_url(exec(sh("echo out; echo err >&2; exit 3"), false, false))
        .await
        .expect("url");
    let mut client = spdy_client::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
        .await
        .expect("upgrade");
    assert_eq!(client.protocol, "v4.channel.k8s.io");
    // Streams in the order kubectl opens them; each must be answered.
    let error = client.open(&[("streamType", "error")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let stderr = client.open(&[("streamType", "stderr")]).await;
    client.ping(7).await;
    let seen = within("exec session", client.collect()).await;
    assert_eq!(seen.replies, vec![error, stdout, stderr]);
    assert_eq!(seen.text(stdout), "out\n");
    assert_eq!(seen.text(stderr), "err\n");
    for id in [error, stdout, stderr] {
        assert!(
            seen.fin.contains(&id),
            "stream {id} ended with FIN: {seen:?}"
        );
    }
    assert!(seen.goaway, "session ends with GOAWAY");
    let status: serde_json::Value = serde_json::from_str(&seen.text(error)).expect("status json");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_exec_feeds_stdin_and_answers_pings() {
    let service = service().await;
    let url = service
        .exec_url(exec(sh("read x; echo \"got $x\""), false, true))
        .await
        .expect("url");
    let mut client = spdy_client::connect(&url, &["v4.channel.k8s.io"])
        .await
        .expect("upgrade");
    let error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let stderr = client.open(&[("streamType", "stderr")]).await;
    client.ping(1).await;
    let mut replies = Vec::new();
    let mut pinged = false;
    while replies.len() < 4 || !pinged {
        match within("replies", client.next()).await {
            Event::Reply(id) => replies.push(id),
            Event::Ping(1) => pinged = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replies, vec![error, stdin, stdout, stderr]);
    client.data(stdin, b"hello\n", true).await;
    let seen = within("exec session", client.collect()).await;
    assert_eq!(seen.text(stdout), "got hello\n");
    let status: serde_json::Value = serde_json::from_str(&seen.text(error)).expect("status json");
    assert_eq!(status["status"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_v2_reports_failure_as_text() {
    let service = service().await;
    let url = service
        .exec_url(exec(sh("exit 1"), false, false))
        .await
        .expect("url");
    let mut client = spdy_client::connect(&url, &["v2.channel.k8s.io"])
        .await
        .expect("upgrade");
    assert_eq!(client.protocol, "v2.channel.k8s.io");
    let error = client.open(&[("streamType", "error")]).await;
    client.open(&[("streamType", "stdout")]).await;
    client.open(&[("streamType", "stderr")]).await;
    let seen = within("exec session", client.collect()).await;
    assert!(
        seen.text(error).contains("non-zero exit code"),
        "{:?}",
        seen.text(error)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_protocol_mismatch_is_refused() {
    let service = service().await;
    let url = service
        .exec_url(exec(sh("true"), false, false))
        .await
        .expect("url");
    let (status, headers) = spdy_client::connect(&url, &["v9.channel.k8s.io"])
        .await
        .err()
        .expect("no common protocol");
    assert_eq!(status, 403);
    assert!(headers.contains_key("x-accepted-stream-protocol-versions"));
}

async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = conn.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    (port, task)
}

/// A loopback port that nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_port_forward_carries_several_connections() {
    let (port, echo) = echo_server().await;
    let dead = closed_port().await;
    let service = service().await;
    let url = service
        .port_forward_url(PortForwardRequest {
            pod_id: "pod".into(),
            ports: vec![],
        })
        .await
        .expect("url");
    let mut client = spdy_client::connect(&url, &["portforward.k8s.io"])
        .await
        .expect("upgrade");
    let port_text = port.to_string();
    for request_id in ["0", "1"] {
        let headers = |t| {
            vec![
                ("streamType", t),
                ("port", port_text.as_str()),
                ("requestID", request_id),
            ]
        };
        let error = client.open(&headers("error")).await;
        let data = client.open(&headers("data")).await;
        let message = format!("hello {request_id}");
        client.data(data, message.as_bytes(), true).await;
        let mut echoed = Vec::new();
        let mut ended = Vec::new();
        while !(ended.contains(&data) && ended.contains(&error)) {
            match within("forwarded echo", client.next()).await {
                Event::Reply(_) => {}
                Event::Data(id, bytes) if id == data => echoed.extend(bytes),
                Event::Fin(id) => ended.push(id),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(String::from_utf8_lossy(&echoed), message);
    }
    // A client reset ends the pair without waiting for the pod side.
    let headers = |t| {
        vec![
            ("streamType", t),
            ("port", port_text.as_str()),
            ("requestID", "r"),
        ]
    };
    let error = client.open(&headers("error")).await;
    let data = client.open(&headers("data")).await;
    client.data(data, b"open", false).await;
    loop {
        match within("echo before reset", client.next()).await {
            Event::Data(id, _) if id == data => break,
            Event::Reply(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    client.reset(data).await;
    loop {
        match within("pair end after reset", client.next()).await {
            Event::Fin(id) if id == error => break,
            Event::Fin(_) | Event::Data(..) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // A port with nothing behind it: the failure comes on the error stream.
    let dead_text = dead.to_string();
    let error = client
        .open(&[
            ("streamType", "error"),
            ("port", &dead_text),
            ("requestID", "2"),
        ])
        .await;
    client
        .open(&[
            ("streamType", "data"),
            ("port", &dead_text),
            ("requestID", "2"),
        ])
        .await;
    let mut text = Vec::new();
    loop {
        match within("port-forward error", client.next()).await {
            Event::Data(id, bytes) if id == error => text.extend(bytes),
            Event::Fin(id) if id == error => break,
            Event::Reply(_) | Event::Fin(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(&format!("error forwarding port {dead}")),
        "{text}"
    );
    client.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.active_sessions() > 0 {
        assert!(
            Instant::now() < deadline,
            "port-forward session outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_client_disconnect_kills_the_process() {
    let service = service().await;
    let url = service
        .exec_url(exec(sh("echo $$; exec sleep 600"), false, false))
        .await
        .expect("url");
    let mut client = spdy_client::connect(&url, &["v4.channel.k8s.io"])
        .await
        .expect("upgrade");
    client.open(&[("streamType", "error")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    client.open(&[("streamType", "stderr")]).await;
    let mut out = Vec::new();
    while !out.ends_with(b"\n") {
        match within("pid", client.next()).await {
            Event::Data(id, bytes) if id == stdout => out.extend(bytes),
            Event::Reply(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let pid: i32 = String::from_utf8_lossy(&out).trim().parse().expect("pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(client);
    assert_torn_down(&service, pid).await;
}

// ----------------------------------------------------------- WebSocket

type Ws = WebSocketStream<TcpStream>;

async fn ws_connect(url: &str, protocols: &str) -> (Ws, Option<String>) {
    let rest = url.strip_prefix("http://").expect("http url");
    let authority = &rest[..rest.find('/').expect("path")];
    let tcp = TcpStream::connect(authority).await.expect("connect");
    let mut request = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocols.parse().expect("header value"),
    );
    let (ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("websocket handshake");
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (ws, protocol)
}

#[derive(Default, Debug)]
struct WsSeen {
    data: HashMap<u8, Vec<u8>>,
    first: Option<(u8, usize)>,
    closed: Vec<u8>,
    close_frame: bool,
}

impl WsSeen {
    fn text(&self, channel: u8) -> String {
        String::from_utf8_lossy(
            self.data
                .get(&channel)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
        .to_string()
    }
}

async fn ws_collect(ws: &mut Ws, until_text: Option<(u8, &str)>) -> WsSeen {
    let mut seen = WsSeen::default();
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Binary(data)) => {
                let (channel, payload) = data.split_first().expect("channel byte");
                seen.first.get_or_insert((*channel, payload.len()));
                if *channel == 255 {
                    seen.closed.push(payload[0]);
                } else {
                    seen.data
                        .entry(*channel)
                        .or_default()
                        .extend_from_slice(payload);
                }
                if let Some((ch, text)) = until_text
                    && seen.text(ch).contains(text)
                {
                    return seen;
                }
            }
            Ok(Message::Close(_)) => seen.close_frame = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    seen
}

async fn ws_send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut message = vec![channel];
    message.extend_from_slice(data);
    ws.send(Message::Binary(message.into()))
        .await
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_v5_exec_without_tty() {
    let service = service().await;
    let url = service
        .exec_url(exec(sh("echo out; echo err >&2; exit 4"), false, false))
        .await
        .expect("url");
    let (mut ws, protocol) = ws_connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io").await;
    assert_eq!(protocol.as_deref(), Some("v5.channel.k8s.io"));
    let seen = within("exec", ws_collect(&mut ws, None)).await;
    assert_eq!(
        seen.first,
        Some((1, 0)),
        "an empty stdout message opens the session"
    );
    assert_eq!(seen.text(1), "out\n");
    assert_eq!(seen.text(2), "err\n");
    let status: serde_json::Value = serde_json::from_str(&seen.text(3)).expect("status json");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "4");
    assert_eq!(seen.closed, vec![1, 2, 3], "v5 closes each output channel");
    assert!(seen.close_frame);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_v4_exec_with_tty_resizes_and_runs_interactively() {
    let service = service().await;
    let url = service
        .exec_url(exec(
            sh("echo ready; read line; stty size; echo \"got $line\""),
            true,
            true,
        ))
        .await
        .expect("url");
    let (mut ws, protocol) = ws_connect(&url, "v4.channel.k8s.io").await;
    assert_eq!(protocol.as_deref(), Some("v4.channel.k8s.io"));
    within("ready", ws_collect(&mut ws, Some((1, "ready")))).await;
    ws_send(&mut ws, 4, br#"{"Width":100,"Height":40}"#).await;
    ws_send(&mut ws, 0, b"hello\n").await;
    let seen = within("tty exec", ws_collect(&mut ws, None)).await;
    let out = seen.text(1);
    assert!(out.contains("40 100"), "stty size after resize: {out:?}");
    assert!(
        out.contains("got hello\r\n"),
        "a tty ends lines with CRLF: {out:?}"
    );
    assert!(
        !seen.data.contains_key(&2),
        "with a tty there is no stderr channel"
    );
    let status: serde_json::Value = serde_json::from_str(&seen.text(3)).expect("status json");
    assert_eq!(status["status"], "Success");
    assert!(seen.closed.is_empty(), "v4 has no close signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_v5_stdin_close_reaches_the_process() {
    let service = service().await;
    for tty in [false, true] {
        let url = service
            .exec_url(exec(vec!["cat".into()], tty, true))
            .await
            .expect("url");
        let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await;
        ws_send(&mut ws, 0, b"abc\n").await;
        ws.send(Message::Binary(vec![255, 0].into()))
            .await
            .expect("close stdin");
        let seen = within("cat to end", ws_collect(&mut ws, None)).await;
        assert!(
            seen.text(1).contains("abc"),
            "tty {tty}: {:?}",
            seen.text(1)
        );
        let status: serde_json::Value = serde_json::from_str(&seen.text(3)).expect("status json");
        assert_eq!(
            status["status"], "Success",
            "tty {tty}: cat ended on stdin close"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_attach_streams_both_ways() {
    let service = service().await;
    let url = service
        .attach_url(AttachRequest {
            container_id: "c1".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .await
        .expect("url");
    let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await;
    ws_send(&mut ws, 0, b"ping").await;
    within("echo", ws_collect(&mut ws, Some((1, "ping")))).await;
    ws.send(Message::Binary(vec![255, 0].into()))
        .await
        .expect("close stdin");
    let seen = within("attach end", ws_collect(&mut ws, None)).await;
    let status: serde_json::Value = serde_json::from_str(&seen.text(3)).expect("status json");
    assert_eq!(status["status"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_port_forward_prefixes_channels_with_the_port() {
    let (port, echo) = echo_server().await;
    let service = service().await;
    let url = service
        .port_forward_url(PortForwardRequest {
            pod_id: "pod".into(),
            ports: vec![],
        })
        .await
        .expect("url");
    let (mut ws, protocol) = ws_connect(&format!("{url}?port={port}"), "v4.channel.k8s.io").await;
    assert_eq!(protocol.as_deref(), Some("v4.channel.k8s.io"));
    let mut prefixes = Vec::new();
    while prefixes.len() < 2 {
        match within("prefix", ws.next()).await {
            Some(Ok(Message::Binary(data))) => prefixes.push(data.to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }
    let [lo, hi] = port.to_le_bytes();
    assert_eq!(prefixes, vec![vec![0, lo, hi], vec![1, lo, hi]]);
    ws_send(&mut ws, 0, b"through the tunnel").await;
    let seen = within("echo", ws_collect(&mut ws, Some((0, "through the tunnel")))).await;
    assert_eq!(seen.text(0), "through the tunnel");
    drop(ws);
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_disconnect_kills_the_process() {
    let service = service().await;
    let url = service
        .exec_url(exec(sh("echo $$; exec sleep 600"), false, false))
        .await
        .expect("url");
    let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await;
    let seen = within("pid", ws_collect(&mut ws, Some((1, "\n")))).await;
    let pid: i32 = seen.text(1).trim().parse().expect("pid");
    drop(ws);
    assert_torn_down(&service, pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_is_closed_and_its_process_killed() {
    let service = service_with(60, 1).await;
    let url = service
        .exec_url(exec(sh("echo $$; exec sleep 600"), false, false))
        .await
        .expect("url");
    let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await;
    let seen = within("pid", ws_collect(&mut ws, Some((1, "\n")))).await;
    let pid: i32 = seen.text(1).trim().parse().expect("pid");
    // The client keeps the connection open but sends nothing.
    within("idle close", ws_collect(&mut ws, None)).await;
    assert_torn_down(&service, pid).await;
}

// --------------------------------------------------------------- tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reused_expired_and_misrouted_tokens_get_404() {
    let service = service_with(1, 600).await;
    let base = format!("http://{}", service.address());
    assert_eq!(
        http_status(&format!("{base}/exec/{}", "ab".repeat(32)), SPDY_UPGRADE).await,
        404
    );
    assert_eq!(
        http_status(&format!("{base}/exec/"), SPDY_UPGRADE).await,
        404
    );
    assert_eq!(
        http_status(&format!("{base}/other/x"), SPDY_UPGRADE).await,
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
    assert_eq!(http_status(&url, SPDY_UPGRADE).await, 404);

    // An exec token at the attach endpoint is refused (and spent).
    let url = service
        .exec_url(exec(sh("true"), false, false))
        .await
        .expect("url");
    assert_eq!(
        http_status(&url.replace("/exec/", "/attach/"), SPDY_UPGRADE).await,
        404
    );
    assert_eq!(http_status(&url, SPDY_UPGRADE).await, 404);

    // Past its TTL the token is refused.
    let url = service
        .exec_url(exec(sh("true"), false, false))
        .await
        .expect("url");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(http_status(&url, SPDY_UPGRADE).await, 404);

    // A valid token without an upgrade is a bad request, and spent.
    let url = service
        .exec_url(exec(sh("true"), false, false))
        .await
        .expect("url");
    assert_eq!(http_status(&url, "").await, 400);
    assert_eq!(http_status(&url, SPDY_UPGRADE).await, 404);
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
