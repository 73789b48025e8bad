//! SPDY/3.1 sessions: exec (v4 and v2 status), stdin, pings, port forward,
//! teardown when the client goes away.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::spdy_client::{self, Event};
use crate::{assert_torn_down, exec, service, sh, within};
use yonggi::stream::PortForwardRequest;

pub const SPDY_UPGRADE: &str =
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

pub async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
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
pub async fn closed_port() -> u16 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_port_forward_client_disconnect_closes_the_pod_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let service = service().await;
    let url = service
        .port_forward_url(PortForwardRequest {
            pod_id: "pod".into(),
            ports: vec![port],
        })
        .await
        .expect("url");
    let mut client = spdy_client::connect(&url, &["portforward.k8s.io"])
        .await
        .expect("upgrade");
    let port_text = port.to_string();
    let headers = |t| {
        vec![
            ("streamType", t),
            ("port", port_text.as_str()),
            ("requestID", "0"),
        ]
    };
    client.open(&headers("error")).await;
    let data = client.open(&headers("data")).await;
    client.data(data, b"hi", false).await;
    let (mut pod_side, _) = within("pod connection", listener.accept())
        .await
        .expect("accept");
    let mut got = [0u8; 2];
    within("data to the pod", pod_side.read_exact(&mut got))
        .await
        .expect("read");
    assert_eq!(&got, b"hi");
    // The client vanishes without ending anything.
    drop(client);
    let mut rest = Vec::new();
    let n = within("pod connection closed", pod_side.read_to_end(&mut rest))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more reaches the pod");
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.active_sessions() > 0 {
        assert!(Instant::now() < deadline, "session outlived its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
