//! The Kubernetes remotecommand protocol (exec and attach): streams stdin,
//! stdout, stderr, error and resize, over SPDY (one SPDY stream each, named
//! by the `streamType` header) or WebSocket (channels 0-4).
//!
//! Versions: `channel.k8s.io` (v1) and `v2` report a failure as plain text on
//! the error stream; `v3` adds the resize stream; `v4` writes a JSON
//! `metav1.Status` on the error stream, with the exit code of a non-zero exit
//! in `details.causes`; `v5` (WebSocket only) lets the client close a channel
//! (the CLOSE signal `[255, channel]`), which is how stdin ends.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use super::backend::{BackendError, ExecIo, TerminalSize};
use super::channel::{self, ChannelReader, ChannelWriter, IN_QUEUE, OutTx};
use super::spdy::{self, NewStream};
use super::websocket::{self, WsStream};
use super::{Shared, StreamRequest};

/// SPDY subprotocols, the server's preference first (the client's order wins).
pub(crate) const SPDY_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
pub(crate) const WS_PROTOCOLS: [&str; 3] =
    ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// The largest resize message buffered while waiting for the rest of it.
const MAX_RESIZE_MESSAGE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFormat {
    Text,
    Json,
}

struct Options {
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

fn options(request: &StreamRequest) -> Option<Options> {
    match request {
        StreamRequest::Exec(r) => Some(Options {
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr && !r.tty,
        }),
        StreamRequest::Attach(r) => Some(Options {
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr && !r.tty,
        }),
        StreamRequest::PortForward(_) => None,
    }
}

/// The session's channels once the client has opened them: inbound data as
/// receivers, outbound channels as ids on the session's `OutTx`.
struct Streams {
    stdin: Option<mpsc::Receiver<Bytes>>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    error: u32,
    resize: Option<mpsc::Receiver<Bytes>>,
}

pub(crate) async fn serve_spdy<IO>(
    io: IO,
    shared: Arc<Shared>,
    request: StreamRequest,
    protocol: &str,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin,
{
    let Some(opts) = options(&request) else {
        return;
    };
    let format = if protocol == SPDY_PROTOCOLS[0] {
        StatusFormat::Json
    } else {
        StatusFormat::Text
    };
    // Terminal resizing came with v3.
    let with_resize = opts.tty && matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let creation_timeout = shared.stream_creation_timeout;
    spdy::serve(io, shared.idle_timeout, |mut new_streams, out| async move {
        let gathered = tokio::time::timeout(
            creation_timeout,
            gather_spdy(&mut new_streams, &opts, with_resize),
        )
        .await;
        // Streams opened past the expected ones are refused from here on.
        drop(new_streams);
        match gathered {
            Ok(Some(streams)) => run(&shared, &request, opts.tty, streams, out, format).await,
            Ok(None) => {}
            Err(_) => tracing::info!("client did not open the exec/attach streams in time"),
        }
    })
    .await;
}

async fn gather_spdy(
    new_streams: &mut mpsc::Receiver<NewStream>,
    opts: &Options,
    with_resize: bool,
) -> Option<Streams> {
    let mut error = None;
    let mut stdin = None;
    let mut stdout = None;
    let mut stderr = None;
    let mut resize = None;
    loop {
        if error.is_some()
            && stdin.is_some() == opts.stdin
            && stdout.is_some() == opts.stdout
            && stderr.is_some() == opts.stderr
            && resize.is_some() == with_resize
        {
            return Some(Streams {
                stdin,
                stdout,
                stderr,
                error: error?,
                resize,
            });
        }
        let stream = new_streams.recv().await?;
        match stream.headers.get("streamtype") {
            Some("error") => error = Some(stream.id),
            Some("stdin") if opts.stdin => stdin = Some(stream.data),
            Some("stdout") if opts.stdout => stdout = Some(stream.id),
            Some("stderr") if opts.stderr => stderr = Some(stream.id),
            Some("resize") if with_resize => resize = Some(stream.data),
            other => tracing::debug!(stream_type = ?other, "ignoring unexpected stream"),
        }
    }
}

pub(crate) async fn serve_websocket(
    ws: WsStream,
    shared: Arc<Shared>,
    request: StreamRequest,
    protocol: &str,
) {
    let Some(opts) = options(&request) else {
        return;
    };
    let format = if protocol == "channel.k8s.io" || protocol.is_empty() {
        StatusFormat::Text
    } else {
        StatusFormat::Json
    };
    let close_signals = protocol == WS_PROTOCOLS[0];
    let mut inbound = Vec::new();
    let stdin = opts.stdin.then(|| {
        let (tx, rx) = mpsc::channel(IN_QUEUE);
        inbound.push((STDIN, tx));
        rx
    });
    let resize = opts.tty.then(|| {
        let (tx, rx) = mpsc::channel(IN_QUEUE);
        inbound.push((RESIZE, tx));
        rx
    });
    let streams = Streams {
        stdin,
        stdout: opts.stdout.then_some(u32::from(STDOUT)),
        stderr: opts.stderr.then_some(u32::from(STDERR)),
        error: u32::from(ERROR),
        resize,
    };
    let idle = shared.idle_timeout;
    websocket::serve(ws, close_signals, idle, inbound, |out| async move {
        // An empty message on the lowest writable channel tells the client
        // that the session is set up, as kubelet does.
        let first = streams.stdout.or(streams.stderr).unwrap_or(streams.error);
        if channel::send(&out, first, Bytes::new()).await {
            run(&shared, &request, opts.tty, streams, out, format).await;
        }
    })
    .await;
}

/// Runs the command (or attaches), then ends the output streams and reports
/// the outcome on the error stream.
async fn run(
    shared: &Shared,
    request: &StreamRequest,
    tty: bool,
    streams: Streams,
    out: OutTx,
    format: StatusFormat,
) {
    let (resize_tx, resize_rx) = mpsc::channel(IN_QUEUE);
    let io = ExecIo {
        stdin: streams
            .stdin
            .map(|rx| Box::new(ChannelReader::new(rx)) as super::Reader),
        stdout: streams
            .stdout
            .map(|id| Box::new(ChannelWriter::new(out.clone(), id)) as super::Writer),
        stderr: streams
            .stderr
            .map(|id| Box::new(ChannelWriter::new(out.clone(), id)) as super::Writer),
        resize: streams.resize.is_some().then_some(resize_rx),
    };
    let backend = shared.backend.as_ref();
    let work = async {
        match request {
            StreamRequest::Exec(r) => backend
                .exec(&r.container_id, &r.cmd, tty, io)
                .await
                .map(Some),
            StreamRequest::Attach(r) => backend
                .attach(&r.container_id, tty, io)
                .await
                .map(|()| None),
            StreamRequest::PortForward(_) => Ok(None),
        }
    };
    let pump = async {
        match streams.resize {
            Some(rx) => pump_resize(rx, resize_tx).await,
            None => drop(resize_tx),
        }
    };
    tokio::pin!(work);
    // The resize pump ends when the client ends the resize stream; the
    // command may well run on.
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        () = pump => work.await,
    };
    for id in [streams.stdout, streams.stderr].into_iter().flatten() {
        channel::close(&out, id).await;
    }
    if let Some(message) = status(&outcome, format) {
        channel::send(&out, streams.error, message).await;
    }
    channel::close(&out, streams.error).await;
    match outcome {
        Ok(Some(code)) => tracing::debug!(code, "exec session ended"),
        Ok(None) => tracing::debug!("attach session ended"),
        Err(e) => tracing::info!(error = %crate::cri::chain(&e), "exec/attach failed"),
    }
}

/// Forwards the client's terminal sizes, a stream of JSON objects.
async fn pump_resize(mut rx: mpsc::Receiver<Bytes>, tx: mpsc::Sender<TerminalSize>) {
    let mut buf = Vec::new();
    while let Some(chunk) = rx.recv().await {
        buf.extend_from_slice(&chunk);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
        loop {
            match values.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    consumed = values.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::info!(error = %e, "bad terminal size message; ignoring resizes");
                    return;
                }
                None => {
                    consumed = values.byte_offset();
                    break;
                }
            }
        }
        buf.drain(..consumed);
        if buf.len() > MAX_RESIZE_MESSAGE {
            tracing::info!("terminal size message too long; ignoring resizes");
            return;
        }
        for size in sizes {
            if tx.send(size).await.is_err() {
                return;
            }
        }
    }
}

/// What the error stream carries: nothing on success for the text versions.
fn status(outcome: &Result<Option<i32>, BackendError>, format: StatusFormat) -> Option<Vec<u8>> {
    let value = match outcome {
        Ok(None) | Ok(Some(0)) => {
            if format == StatusFormat::Text {
                return None;
            }
            json!({"metadata": {}, "status": "Success"})
        }
        Ok(Some(code)) => {
            let message = format!("command terminated with non-zero exit code: exit status {code}");
            if format == StatusFormat::Text {
                return Some(message.into_bytes());
            }
            json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
        Err(e) => {
            let message = format!("Internal error occurred: {}", crate::cri::chain(e));
            if format == StatusFormat::Text {
                return Some(message.into_bytes());
            }
            json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "details": {"causes": [{"message": crate::cri::chain(e)}]},
                "code": 500,
            })
        }
    };
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: Option<Vec<u8>>) -> serde_json::Value {
        serde_json::from_slice(&bytes.expect("a status")).expect("json")
    }

    #[test]
    fn v4_status_carries_the_exit_code() {
        let ok = parse(status(&Ok(Some(0)), StatusFormat::Json));
        assert_eq!(ok["status"], "Success");
        let failed = parse(status(&Ok(Some(3)), StatusFormat::Json));
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let err = parse(status(
            &Err(BackendError::ContainerNotFound("c".into())),
            StatusFormat::Json,
        ));
        assert_eq!(err["reason"], "InternalError");
    }

    #[test]
    fn text_status_is_silent_on_success() {
        assert_eq!(status(&Ok(Some(0)), StatusFormat::Text), None);
        assert_eq!(status(&Ok(None), StatusFormat::Text), None);
        let text = status(&Ok(Some(2)), StatusFormat::Text).expect("message");
        assert!(String::from_utf8_lossy(&text).contains("non-zero exit code"));
    }

    #[tokio::test]
    async fn resize_messages_may_be_split_or_joined() {
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let pump = tokio::spawn(pump_resize(in_rx, out_tx));
        for part in [
            &b"{\"Width\":80,"[..],
            b"\"Height\":24}{\"Width\":100,\"Height\":40}\n",
            b"{\"Width\":1,\"Height\":2}",
        ] {
            in_tx
                .send(Bytes::copy_from_slice(part))
                .await
                .expect("send");
        }
        drop(in_tx);
        let mut got = Vec::new();
        while let Some(size) = out_rx.recv().await {
            got.push((size.width, size.height));
        }
        pump.await.expect("pump");
        assert_eq!(got, vec![(80, 24), (100, 40), (1, 2)]);
    }
}
