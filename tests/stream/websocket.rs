//! WebSocket sessions: the channel protocol v4/v5 for exec and attach, and
//! port forwarding with port-prefixed channels.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yonggi::stream::{AttachRequest, PortForwardRequest};

use crate::spdy::echo_server;
use crate::{assert_torn_down, exec, service, service_with, sh, within};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_stalls_the_process_instead_of_growing_buffers() {
    let service = service().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let count = dir.path().join("count");
    // Writes 64 KiB blocks forever, noting how many got through.
    let script = format!(
        "echo $$; i=0; while printf '%065536d' 0; do i=$((i+1)); echo $i > {}; done",
        count.display()
    );
    let url = service
        .exec_url(exec(sh(&script), false, false))
        .await
        .expect("url");
    let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await;
    let seen = within("pid", ws_collect(&mut ws, Some((1, "\n")))).await;
    let text = seen.text(1);
    let pid: i32 = text
        .lines()
        .next()
        .expect("pid line")
        .trim()
        .parse()
        .expect("pid");
    // The client now reads nothing: the writer must come to a stop.
    let read_count = || {
        std::fs::read_to_string(&count)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut steady) = (read_count(), 0);
    while steady < 5 {
        assert!(
            Instant::now() < deadline,
            "the writer never stalled ({last} blocks)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = read_count();
        if now == last {
            steady += 1;
        } else {
            (last, steady) = (now, 0);
        }
    }
    // Pipe, queues and both ends' socket buffers: megabytes, not more.
    assert!(
        last * 65536 < 64 << 20,
        "{last} blocks of 64 KiB went out to a client that reads nothing"
    );
    drop(ws);
    assert_torn_down(&service, pid).await;
}
