//! The Kubernetes channel protocol over WebSocket: every binary message
//! starts with its channel number (0 stdin, 1 stdout, 2 stderr, 3 error,
//! 4 resize for remotecommand; 2n and 2n+1 for the n-th forwarded port), the
//! rest is data. With `v5.channel.k8s.io` the message `[255, channel]` ends a
//! channel in either direction.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::channel::{self, Activity, DRAIN_TIMEOUT, MAX_CHUNK, OUT_QUEUE, Out, OutTx};

pub(crate) type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// The channel byte of the v5 CLOSE signal.
const CLOSE_SIGNAL: u8 = 255;
/// The largest message accepted from a client.
const MAX_MESSAGE: usize = 1024 * 1024;

/// Whether the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// The subprotocols the client offers, in its order of preference.
pub(crate) fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The 101 answer to a valid WebSocket handshake, with the chosen subprotocol.
pub(crate) fn accept(
    headers: &HeaderMap,
    protocol: Option<&str>,
) -> Result<Response<Full<Bytes>>, &'static str> {
    let version = headers.get(header::SEC_WEBSOCKET_VERSION);
    if version.map(HeaderValue::as_bytes) != Some(b"13") {
        return Err("unsupported WebSocket version (want 13)");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(protocol) = protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
        .body(Full::new(Bytes::new()))
        .map_err(|_| "cannot build the handshake response")
}

/// The server side of the upgraded connection.
pub(crate) async fn wrap(upgraded: Upgraded) -> WsStream {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await
}

/// Serves one session: client messages go to the `inbound` channel of their
/// number (others are dropped), `logic` queues output on the `OutTx`.
pub(crate) async fn serve<F, Fut>(
    ws: WsStream,
    close_signals: bool,
    idle: Duration,
    inbound: Vec<(u8, mpsc::Sender<Bytes>)>,
    logic: F,
) where
    F: FnOnce(OutTx) -> Fut,
    Fut: Future<Output = ()>,
{
    let (sink, stream) = ws.split();
    let activity = Activity::new();
    activity.touch();
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let reader = read_loop(
        stream,
        close_signals,
        inbound.into_iter().collect(),
        activity.clone(),
    );
    let writer = write_loop(sink, out_rx, close_signals, activity.clone());
    channel::drive(reader, logic(out_tx), writer, &activity, idle).await;
}

async fn read_loop(
    mut stream: futures::stream::SplitStream<WsStream>,
    close_signals: bool,
    mut inbound: HashMap<u8, mpsc::Sender<Bytes>>,
    activity: Activity,
) {
    while let Some(message) = stream.next().await {
        activity.touch();
        let data = match message {
            Ok(Message::Binary(data)) => data,
            Ok(Message::Close(_)) => return,
            // Pings are answered by tungstenite; the base64 protocols (text
            // messages) are not offered.
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket read failed");
                return;
            }
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        if close_signals && channel == CLOSE_SIGNAL {
            if let Some(closed) = payload.first() {
                inbound.remove(closed);
            }
            continue;
        }
        if payload.is_empty() {
            continue;
        }
        if let Some(tx) = inbound.get(&channel)
            && tx.send(data.slice(1..)).await.is_err()
        {
            inbound.remove(&channel);
        }
    }
}

async fn write_loop(
    mut sink: futures::stream::SplitSink<WsStream, Message>,
    mut out: mpsc::Receiver<Out>,
    close_signals: bool,
    activity: Activity,
) {
    while let Some(item) = out.recv().await {
        let message = match item {
            Out::Data(channel, data) => {
                let mut buf = BytesMut::with_capacity(data.len() + 1);
                buf.put_u8(channel_byte(channel));
                buf.extend_from_slice(&data);
                Message::Binary(buf.freeze())
            }
            Out::Close(channel) if close_signals => {
                Message::Binary(Bytes::from(vec![CLOSE_SIGNAL, channel_byte(channel)]))
            }
            Out::Close(_) => continue,
        };
        if let Err(e) = sink.send(message).await {
            tracing::debug!(error = %e, "WebSocket write failed");
            return;
        }
        activity.touch();
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}

fn channel_byte(channel: u32) -> u8 {
    // Channels are created from u8 numbers by the sessions of this module.
    u8::try_from(channel).unwrap_or(u8::MAX)
}

/// Carries a byte stream (a SPDY session) in binary messages, as newer
/// clients tunnel port forwarding (`SPDY/3.1+portforward.k8s.io`): bytes
/// from the client go to `local`, bytes from `local` go out as messages.
/// Ends when both directions are done, or shortly after one of them is.
pub(crate) async fn tunnel(ws: WsStream, local: DuplexStream) {
    let (mut sink, mut stream) = ws.split();
    let (mut local_rd, mut local_wr) = tokio::io::split(local);
    let inbound = async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(data) if local_wr.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = local_wr.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            match local_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut inbound => { let _ = tokio::time::timeout(DRAIN_TIMEOUT, outbound).await; }
        () = &mut outbound => { let _ = tokio::time::timeout(DRAIN_TIMEOUT, inbound).await; }
    }
}
