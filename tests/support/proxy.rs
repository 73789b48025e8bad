//! A small HTTP/1.1 proxy in front of a registry, for what a registry cannot
//! do by itself: count the requests per path (did 4 concurrent pulls fetch
//! each blob once?), slow blob bodies down (a pull that outlives its
//! deadline), and corrupt blob bodies (a tampered blob must be rejected).
//!
//! Each client connection carries exactly one request: the proxy forwards it
//! with `Connection: close`, so the registry closes after its answer and the
//! client opens a new connection for the next request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to `GET .../blobs/...` response bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyOptions {
    /// Sleep this long after every 16 KiB of a blob body.
    pub blob_delay: Option<Duration>,
    /// Flip the bits of the first body byte of every blob response.
    pub tamper_blobs: bool,
}

pub struct Proxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a random loopback port forwarding to `upstream` (`127.0.0.1:PORT`).
    pub async fn start(upstream: &str, options: ProxyOptions) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let upstream: SocketAddr = upstream.parse().expect("upstream is IP:PORT");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(client, upstream, options, log).await;
                });
            }
        });
        Proxy {
            addr,
            requests,
            task,
        }
    }

    /// `127.0.0.1:PORT`, usable as a registry host in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Request lines seen so far: `GET /v2/repo/blobs/sha256:... HTTP/1.1`.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many `GET`s of each blob digest went through.
    pub fn blob_gets(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for line in self.requests() {
            let mut parts = line.split_whitespace();
            let (Some("GET"), Some(path)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some((_, digest)) = path.split_once("/blobs/") {
                *counts.entry(digest.to_string()).or_default() += 1;
            }
        }
        counts
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    options: ProxyOptions,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request_line.clone());
    let is_blob = request_line.starts_with("GET ") && request_line.contains("/blobs/");
    let mut forwarded = format!("{request_line}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");

    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(forwarded.as_bytes()).await?;
    server.write_all(&head[end..]).await?;
    let (mut server_read, mut server_write) = server.into_split();
    let (mut client_read, mut client_write) = client.into_split();
    // A request body (token POSTs) streams on; it ends when the client half-closes or the answer is done.
    let upload = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });

    let mut body_started = false;
    let mut ok = false;
    let mut response_head = Vec::new();
    let mut tampered = false;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = server_read.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let data = &mut chunk[..n];
        if is_blob && !body_started {
            let before = response_head.len();
            response_head.extend_from_slice(data);
            if let Some(i) = response_head.windows(4).position(|w| w == b"\r\n\r\n") {
                body_started = true;
                ok = response_head.starts_with(b"HTTP/1.1 200")
                    || response_head.starts_with(b"HTTP/1.0 200");
                let body_at = i + 4 - before;
                if options.tamper_blobs && ok && body_at < data.len() {
                    data[body_at] ^= 0xff;
                    tampered = true;
                }
            }
        } else if is_blob && options.tamper_blobs && ok && !tampered && !data.is_empty() {
            data[0] ^= 0xff;
            tampered = true;
        }
        client_write.write_all(data).await?;
        if is_blob && let Some(delay) = options.blob_delay {
            tokio::time::sleep(delay).await;
        }
    }
    client_write.shutdown().await?;
    upload.abort();
    Ok(())
}
