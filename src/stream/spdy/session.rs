//! One SPDY connection on the server side: the frame reader that answers
//! streams and routes data to them, the frame writer, and the session logic
//! (exec, attach or port forward) driven together by `channel::drive`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{FLAG_FIN, Frame, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, parse_raw};
use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};
use crate::stream::channel::{self, Activity, IN_QUEUE, OUT_QUEUE, Out, OutTx};

/// Streams a connection may have open at once; a port-forward session opens
/// two per forwarded connection and the client resets them when done.
const MAX_STREAMS: usize = 4096;
/// Streams opened by the client and not yet taken by the session logic.
const NEW_STREAM_QUEUE: usize = 16;

/// A stream the client opened, already answered with SYN_REPLY.
pub(crate) struct NewStream {
    pub(crate) id: u32,
    pub(crate) headers: Headers,
    /// The client's data on this stream; ends with its FIN or RST_STREAM.
    pub(crate) data: mpsc::Receiver<Bytes>,
    /// Cancelled when the client resets the stream.
    pub(crate) reset: CancellationToken,
    /// Held for as long as the session logic uses the stream.
    _alive: Arc<()>,
}

struct InStream {
    data: Option<mpsc::Sender<Bytes>>,
    reset: CancellationToken,
    alive: Weak<()>,
}

impl InStream {
    /// Nothing more can happen on a stream the client has ended and the
    /// logic has let go of; clients need not reset such streams.
    fn finished(&self) -> bool {
        self.data.is_none() && self.alive.strong_count() == 0
    }
}

/// Serves one upgraded connection: `logic` receives the streams the client
/// opens and queues its output (stream id, data or FIN) on the `OutTx`.
pub(crate) async fn serve<IO, F, Fut>(io: IO, idle: Duration, logic: F)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin,
    F: FnOnce(mpsc::Receiver<NewStream>, OutTx) -> Fut,
    Fut: Future<Output = ()>,
{
    let (rd, wr) = tokio::io::split(io);
    let activity = Activity::new();
    activity.touch();
    let last_stream = Arc::new(AtomicU32::new(0));
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let (ctl_tx, ctl_rx) = mpsc::channel(OUT_QUEUE);
    let (streams_tx, streams_rx) = mpsc::channel(NEW_STREAM_QUEUE);
    let reader = read_loop(
        rd,
        ctl_tx,
        streams_tx,
        activity.clone(),
        last_stream.clone(),
    );
    let writer = write_loop(wr, out_rx, ctl_rx, activity.clone(), last_stream);
    channel::drive(reader, logic(streams_rx, out_tx), writer, &activity, idle).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    ctl: mpsc::Sender<Frame>,
    new_streams: mpsc::Sender<NewStream>,
    activity: Activity,
    last_stream: Arc<AtomicU32>,
) {
    let mut decompressor = HeaderDecompressor::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut streams: HashMap<u32, InStream> = HashMap::new();
    loop {
        let raw = loop {
            match parse_raw(&mut buf) {
                Ok(Some(raw)) => break raw,
                Ok(None) => {}
                Err(e) => {
                    tracing::info!(error = %e, "closing SPDY connection");
                    return;
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY connection read failed");
                    return;
                }
            }
        };
        activity.touch();
        let frame = match Frame::decode(raw, &mut decompressor) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::info!(error = %e, "closing SPDY connection");
                return;
            }
        };
        let reply = match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                let last = last_stream.load(Ordering::Relaxed);
                if stream_id == 0 || stream_id % 2 == 0 || stream_id <= last {
                    // Client streams have increasing odd ids; anything else
                    // means the framing is off.
                    Some(Frame::RstStream {
                        stream_id: stream_id.max(1),
                        status: RST_PROTOCOL_ERROR,
                    })
                } else if streams.len() >= MAX_STREAMS && {
                    streams.retain(|_, s| !s.finished());
                    streams.len() >= MAX_STREAMS
                } {
                    Some(Frame::RstStream {
                        stream_id,
                        status: RST_REFUSED_STREAM,
                    })
                } else {
                    last_stream.store(stream_id, Ordering::Relaxed);
                    let (tx, rx) = mpsc::channel(IN_QUEUE);
                    let reset = CancellationToken::new();
                    let alive = Arc::new(());
                    let weak = Arc::downgrade(&alive);
                    let stream = NewStream {
                        id: stream_id,
                        headers,
                        data: rx,
                        reset: reset.clone(),
                        _alive: alive,
                    };
                    let reply = Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Headers::default(),
                    };
                    if ctl.send(reply).await.is_err() {
                        return;
                    }
                    if new_streams.try_send(stream).is_ok() {
                        let data = (flags & FLAG_FIN == 0).then_some(tx);
                        streams.insert(
                            stream_id,
                            InStream {
                                data,
                                reset,
                                alive: weak,
                            },
                        );
                        None
                    } else {
                        Some(Frame::RstStream {
                            stream_id,
                            status: RST_REFUSED_STREAM,
                        })
                    }
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(stream) = streams.get_mut(&stream_id) {
                    if let Some(tx) = &stream.data
                        && !data.is_empty()
                        && tx.send(data).await.is_err()
                    {
                        stream.data = None;
                    }
                    if flags & FLAG_FIN != 0 {
                        stream.data = None;
                    }
                }
                None
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0
                    && let Some(stream) = streams.get_mut(&stream_id)
                {
                    stream.data = None;
                }
                None
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(stream) = streams.remove(&stream_id) {
                    stream.reset.cancel();
                }
                None
            }
            // We never send pings, so every ping is the client's: echo it.
            Frame::Ping { id } => Some(Frame::Ping { id }),
            Frame::GoAway { .. } => return,
            Frame::SynReply { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => None,
        };
        if let Some(reply) = reply
            && ctl.send(reply).await.is_err()
        {
            return;
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut out: mpsc::Receiver<Out>,
    mut ctl: mpsc::Receiver<Frame>,
    activity: Activity,
    last_stream: Arc<AtomicU32>,
) {
    let mut compressor = match HeaderCompressor::new() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up SPDY header compression");
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(channel::MAX_CHUNK + 64);
    let (mut out_open, mut ctl_open) = (true, true);
    loop {
        let frame = tokio::select! {
            biased;
            f = ctl.recv(), if ctl_open => match f {
                Some(f) => f,
                None => { ctl_open = false; continue; }
            },
            o = out.recv(), if out_open => match o {
                Some(Out::Data(stream_id, data)) => Frame::Data { stream_id, flags: 0, data },
                Some(Out::Close(stream_id)) => Frame::Data { stream_id, flags: FLAG_FIN, data: Bytes::new() },
                None => { out_open = false; continue; }
            },
            else => break,
        };
        if !write_frame(&mut wr, &frame, &mut compressor, &mut buf).await {
            return;
        }
        activity.touch();
    }
    let goaway = Frame::GoAway {
        last_good_stream_id: last_stream.load(Ordering::Relaxed),
        status: 0,
    };
    if write_frame(&mut wr, &goaway, &mut compressor, &mut buf).await {
        let _ = wr.shutdown().await;
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    wr: &mut W,
    frame: &Frame,
    compressor: &mut HeaderCompressor,
    buf: &mut BytesMut,
) -> bool {
    buf.clear();
    if let Err(e) = frame.encode(compressor, buf) {
        tracing::warn!(error = %e, "cannot encode SPDY frame");
        return false;
    }
    match async {
        wr.write_all(buf).await?;
        wr.flush().await
    }
    .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "SPDY connection write failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::spdy::frame::parse_raw;

    /// A client opening many short streams (each ended at once, never
    /// reset) is never refused: finished streams leave the table.
    #[tokio::test]
    async fn finished_streams_do_not_count_against_the_limit() {
        let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve(
            server_io,
            Duration::from_secs(60),
            |mut streams, _out| async move {
                while let Some(stream) = streams.recv().await {
                    drop(stream);
                }
            },
        ));
        let total = u32::try_from(MAX_STREAMS).expect("fits") + 100;
        let mut comp = HeaderCompressor::new().expect("compressor");
        let mut decomp = HeaderDecompressor::new();
        let mut buf = BytesMut::new();
        let mut replies = 0;
        for n in 0..total {
            let mut wire = BytesMut::new();
            Frame::SynStream {
                stream_id: 2 * n + 1,
                associated_id: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: Headers(vec![("streamtype".into(), "data".into())]),
            }
            .encode(&mut comp, &mut wire)
            .expect("encode");
            client_io.write_all(&wire).await.expect("write");
            // Read the answer to this stream before opening the next.
            loop {
                if let Some(raw) = parse_raw(&mut buf).expect("parse") {
                    match Frame::decode(raw, &mut decomp).expect("decode") {
                        Frame::SynReply { stream_id, .. } => {
                            assert_eq!(stream_id, 2 * n + 1);
                            replies += 1;
                            break;
                        }
                        other => panic!("stream {n}: unexpected {other:?}"),
                    }
                }
                if client_io.read_buf(&mut buf).await.expect("read") == 0 {
                    panic!("server closed the connection");
                }
            }
        }
        assert_eq!(replies, total);
        drop(client_io);
        server.await.expect("server ends with its client");
    }
}
