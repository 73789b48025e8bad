//! A small SPDY/3.1 client written for the tests, independent of the
//! server's codec: it frames and compresses as the Kubernetes client
//! (moby/spdystream) does — an HTTP/1.1 Upgrade, then SYN_STREAM frames with
//! zlib-compressed header blocks (SPDY/3 dictionary, sync flush per block),
//! data frames, FIN, RST_STREAM, PING.

use std::collections::HashMap;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DICTIONARY: &[u8] = include_bytes!("../../src/stream/spdy/dictionary.bin");

#[derive(Debug, PartialEq)]
pub enum Event {
    Reply(u32),
    Data(u32, Vec<u8>),
    Fin(u32),
    Reset(u32, u32),
    Ping(u32),
    GoAway,
    Closed,
}

pub struct SpdyClient {
    tcp: TcpStream,
    buf: Vec<u8>,
    comp: Compress,
    decomp: Decompress,
    next_id: u32,
    pub protocol: String,
}

/// The HTTP status and headers of the upgrade answer, and the client when 101.
pub async fn connect(
    url: &str,
    protocols: &[&str],
) -> Result<SpdyClient, (u16, HashMap<String, String>)> {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_at(rest.find('/').expect("path"));
    let mut tcp = TcpStream::connect(authority).await.expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .expect("send request");
    let (status, headers, leftover) = read_http_head(&mut tcp).await;
    if status != 101 {
        return Err((status, headers));
    }
    let mut comp = Compress::new(Compression::best(), true);
    comp.set_dictionary(DICTIONARY).expect("dictionary");
    Ok(SpdyClient {
        tcp,
        buf: leftover,
        comp,
        decomp: Decompress::new(true),
        next_id: 1,
        protocol: headers
            .get("x-stream-protocol-version")
            .cloned()
            .unwrap_or_default(),
    })
}

/// Reads an HTTP/1.1 response head; returns status, lowercased headers and
/// whatever bytes followed it.
pub async fn read_http_head(tcp: &mut TcpStream) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buf[end + 4..].to_vec())
}

fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn control(frame_type: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, 3];
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

impl SpdyClient {
    fn compress(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 1024);
        self.comp
            .compress_vec(block, &mut out, FlushCompress::Sync)
            .expect("compress");
        out
    }

    /// Opens a stream (SYN_STREAM) with these headers; returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let compressed = self.compress(&header_block(headers));
        let mut body = Vec::new();
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&compressed);
        self.write(&control(1, 0, &body)).await;
        id
    }

    pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        let mut frame = id.to_be_bytes().to_vec();
        frame.push(u8::from(fin));
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(data);
        self.write(&frame).await;
    }

    pub async fn reset(&mut self, id: u32) {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&5u32.to_be_bytes()); // CANCEL
        self.write(&control(3, 0, &body)).await;
    }

    pub async fn ping(&mut self, id: u32) {
        self.write(&control(6, 0, &id.to_be_bytes())).await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write frame");
    }

    async fn fill(&mut self, want: usize) -> bool {
        while self.buf.len() < want {
            let mut chunk = [0u8; 16384];
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    fn decompress(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        let start = self.decomp.total_in();
        loop {
            let used = (self.decomp.total_in() - start) as usize;
            match self
                .decomp
                .decompress_vec(&block[used..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.decomp.set_dictionary(DICTIONARY).expect("dictionary");
                    continue;
                }
                Err(e) => panic!("server sent a corrupt header block: {e}"),
            }
            if (self.decomp.total_in() - start) as usize == block.len() {
                return out;
            }
        }
    }

    /// The next frame from the server, as an event.
    pub async fn next(&mut self) -> Event {
        if !self.fill(8).await {
            return Event::Closed;
        }
        let len = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if !self.fill(8 + len).await {
            return Event::Closed;
        }
        let frame: Vec<u8> = self.buf.drain(..8 + len).collect();
        let flags = frame[4];
        let body = &frame[8..];
        let word =
            |at: usize| u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        if frame[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            if body.is_empty() && flags & 1 != 0 {
                return Event::Fin(id);
            }
            assert_eq!(
                flags & 1,
                0,
                "this client expects FIN on an empty frame, as spdystream sends it"
            );
            return Event::Data(id, body.to_vec());
        }
        assert_eq!(frame[1], 3, "SPDY version");
        match u16::from_be_bytes([frame[2], frame[3]]) {
            2 => {
                let id = word(0);
                let block = self.decompress(&body[4..]);
                assert_eq!(&block[..4], &[0, 0, 0, 0], "SYN_REPLY carries no headers");
                Event::Reply(id)
            }
            3 => Event::Reset(word(0), word(4)),
            6 => Event::Ping(word(0)),
            7 => Event::GoAway,
            other => panic!("unexpected control frame type {other}"),
        }
    }

    /// Reads until the server closes, gathering each stream's data.
    pub async fn collect(&mut self) -> Collected {
        let mut seen = Collected::default();
        loop {
            match self.next().await {
                Event::Data(id, data) => seen.data.entry(id).or_default().extend(data),
                Event::Fin(id) => seen.fin.push(id),
                Event::GoAway => seen.goaway = true,
                Event::Closed => return seen,
                Event::Reply(id) => seen.replies.push(id),
                Event::Reset(id, _) => seen.resets.push(id),
                Event::Ping(_) => {}
            }
        }
    }

    pub async fn shutdown(mut self) {
        let _ = self.tcp.shutdown().await;
    }
}

#[derive(Default, Debug)]
pub struct Collected {
    pub data: HashMap<u32, Vec<u8>>,
    pub fin: Vec<u32>,
    pub replies: Vec<u32>,
    pub resets: Vec<u32>,
    pub goaway: bool,
}

impl Collected {
    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(Vec::as_slice).unwrap_or_default())
            .to_string()
    }
}
