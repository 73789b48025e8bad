//! The Kubernetes portforward protocol.
//!
//! Over SPDY (`portforward.k8s.io`) the client opens, for each connection it
//! forwards, an error stream and a data stream that carry the same `port`
//! and `requestID` headers; the server connects to the port inside the pod
//! and copies bytes both ways, and reports a failure as text on the error
//! stream. One SPDY session carries any number of such pairs.
//!
//! Over WebSocket the ports come from the `port` query parameters; port n
//! uses channel 2n for data and 2n+1 for errors, and the server first writes
//! the port number (2 bytes, little-endian) on both channels. Newer clients
//! instead tunnel the SPDY session itself through the WebSocket
//! (`SPDY/3.1+portforward.k8s.io`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::channel::{self, ChannelReader, ChannelWriter, IN_QUEUE, OutTx};
use super::spdy::{self, NewStream};
use super::websocket::{self, WsStream};
use super::{PortForwardRequest, Shared};

pub(crate) const SPDY_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];
/// The SPDY session tunnelled in WebSocket binary messages (client-go's
/// port forwarding over WebSocket, crictl --transport websocket).
pub(crate) const WS_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
pub(crate) const WS_PROTOCOLS: [&str; 4] = [
    WS_TUNNEL_PROTOCOL,
    "v4.channel.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
];
/// Two WebSocket channels per port, numbered by one byte.
pub(crate) const MAX_WS_PORTS: usize = 127;

/// Half of a SPDY stream pair waiting for its other half.
#[derive(Default)]
struct Pending {
    data: Option<NewStream>,
    error: Option<NewStream>,
    since: Option<Instant>,
}

pub(crate) async fn serve_spdy<IO>(io: IO, shared: Arc<Shared>, request: PortForwardRequest)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin,
{
    let idle = shared.idle_timeout;
    spdy::serve(io, idle, |mut new_streams, out| async move {
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut forwards = FuturesUnordered::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                stream = new_streams.recv() => {
                    let Some(stream) = stream else { break };
                    let (kind, id) = match classify(&stream) {
                        Some(found) => found,
                        None => {
                            tracing::debug!(stream = stream.id, "ignoring port-forward stream without a usable type");
                            continue;
                        }
                    };
                    let entry = pending.entry(id.clone()).or_default();
                    entry.since.get_or_insert_with(Instant::now);
                    match kind {
                        StreamKind::Data => entry.data = Some(stream),
                        StreamKind::Error => entry.error = Some(stream),
                    }
                    if entry.data.is_some() && entry.error.is_some()
                        && let Some(Pending { data: Some(data), error: Some(error), .. }) = pending.remove(&id)
                    {
                        forwards.push(forward_pair(&shared, &request, data, error, out.clone()));
                    }
                }
                Some(()) = forwards.next(), if !forwards.is_empty() => {}
                _ = sweep.tick() => {
                    let timeout = shared.stream_creation_timeout;
                    let expired: Vec<String> = pending
                        .iter()
                        .filter(|(_, p)| p.since.is_some_and(|s| s.elapsed() >= timeout))
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in expired {
                        tracing::info!(request_id = %id, "port-forward stream pair not completed in time");
                        if let Some(p) = pending.remove(&id) {
                            for stream in [p.data, p.error].into_iter().flatten() {
                                channel::close(&out, stream.id).await;
                            }
                        }
                    }
                }
            }
        }
    })
    .await;
}

enum StreamKind {
    Data,
    Error,
}

/// The stream's type and the request id that pairs it. Clients older than
/// the `requestID` header open the error stream, then the data stream, with
/// consecutive odd ids; pair those by the error stream's id.
fn classify(stream: &NewStream) -> Option<(StreamKind, String)> {
    let kind = match stream.headers.get("streamtype")? {
        "data" => StreamKind::Data,
        "error" => StreamKind::Error,
        _ => return None,
    };
    let id = match (stream.headers.get("requestid"), &kind) {
        (Some(id), _) => id.to_string(),
        (None, StreamKind::Error) => stream.id.to_string(),
        (None, StreamKind::Data) => stream.id.checked_sub(2)?.to_string(),
    };
    Some((kind, id))
}

async fn forward_pair(
    shared: &Shared,
    request: &PortForwardRequest,
    data: NewStream,
    error: NewStream,
    out: OutTx,
) {
    let port = data
        .headers
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0);
    let reset = CancellationToken::new();
    let (data_reset, error_reset) = (data.reset.clone(), error.reset.clone());
    let watch_reset = async {
        tokio::select! {
            () = data_reset.cancelled() => {}
            () = error_reset.cancelled() => {}
        }
        reset.cancel();
    };
    let work = async {
        match port {
            None => {
                let message = format!(
                    "invalid port header {:?}",
                    data.headers.get("port").unwrap_or_default()
                );
                channel::send(&out, error.id, message).await;
            }
            Some(port) => {
                forward(shared, request, port, data.data, data.id, error.id, &out).await;
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = watch_reset => tracing::debug!("client reset a port-forward stream"),
    }
    channel::close(&out, data.id).await;
    channel::close(&out, error.id).await;
}

/// Connects to `port` in the pod and copies until both directions are done;
/// failures go to the error channel as text, as kubelet writes them.
async fn forward(
    shared: &Shared,
    request: &PortForwardRequest,
    port: u16,
    inbound: mpsc::Receiver<Bytes>,
    data_channel: u32,
    error_channel: u32,
    out: &OutTx,
) {
    let pod = &request.pod_id;
    if !request.ports.is_empty() && !request.ports.contains(&port) {
        let message = format!("port {port} was not requested for pod sandbox {pod}");
        channel::send(out, error_channel, message).await;
        return;
    }
    let conn = match shared.backend.port_forward(pod, port).await {
        Ok(conn) => conn,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {pod}: {}",
                crate::cri::chain(&e)
            );
            tracing::info!("{message}");
            channel::send(out, error_channel, message).await;
            return;
        }
    };
    let (mut remote_rd, mut remote_wr) = tokio::io::split(conn);
    let up = async {
        let mut client = ChannelReader::new(inbound);
        if let Err(e) = tokio::io::copy(&mut client, &mut remote_wr).await {
            tracing::debug!(port, error = %e, "port-forward write to the pod failed");
        }
        // The client is done sending: pass the half-close on.
        let _ = remote_wr.shutdown().await;
    };
    let down = async {
        let mut client = ChannelWriter::new(out.clone(), data_channel);
        if let Err(e) = tokio::io::copy(&mut remote_rd, &mut client).await {
            tracing::debug!(port, error = %e, "port-forward read from the pod failed");
        }
        channel::close(out, data_channel).await;
    };
    tokio::join!(up, down);
}

/// Port forwarding as a SPDY session inside the WebSocket connection.
pub(crate) async fn serve_tunnel(ws: WsStream, shared: Arc<Shared>, request: PortForwardRequest) {
    let (spdy_side, ws_side) = tokio::io::duplex(2 * channel::MAX_CHUNK);
    tokio::join!(
        serve_spdy(spdy_side, shared, request),
        websocket::tunnel(ws, ws_side)
    );
}

pub(crate) async fn serve_websocket(
    ws: WsStream,
    shared: Arc<Shared>,
    request: PortForwardRequest,
    ports: Vec<u16>,
) {
    let mut inbound = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..ports.len() {
        let (tx, rx) = mpsc::channel(IN_QUEUE);
        // MAX_WS_PORTS keeps 2*i+1 within a byte; the server checks it.
        let data = u8::try_from(2 * i).unwrap_or(u8::MAX - 1);
        inbound.push((data, tx));
        receivers.push(rx);
    }
    let idle = shared.idle_timeout;
    websocket::serve(ws, false, idle, inbound, |out| async move {
        let mut forwards = Vec::new();
        for (i, (port, rx)) in ports.iter().zip(receivers).enumerate() {
            let data = u32::try_from(2 * i).unwrap_or(u32::MAX - 1);
            let error = data + 1;
            let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
            if !channel::send(&out, data, prefix.clone()).await
                || !channel::send(&out, error, prefix).await
            {
                return;
            }
            forwards.push(forward(&shared, &request, *port, rx, data, error, &out));
        }
        futures::future::join_all(forwards).await;
    })
    .await;
}
