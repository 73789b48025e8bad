//! What the protocol sessions share whatever the transport: outgoing
//! messages addressed to a channel (a SPDY stream id or a WebSocket channel
//! number), the reader/writer adapters handed to the backend, the idle clock,
//! and the loop that drives a transport's reader, writer and session logic.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Outgoing messages queued per session; with at most `MAX_CHUNK` bytes each
/// this bounds what a slow client can make the daemon hold.
pub(crate) const OUT_QUEUE: usize = 32;
/// Inbound messages queued per channel before the reader waits.
pub(crate) const IN_QUEUE: usize = 16;
/// The largest data message the server sends.
pub(crate) const MAX_CHUNK: usize = 32 * 1024;
/// How long queued output may take to reach the client once a session ends.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One unit of output: data on a channel, or the end of that channel.
#[derive(Debug)]
pub(crate) enum Out {
    Data(u32, Bytes),
    Close(u32),
}

pub(crate) type OutTx = mpsc::Sender<Out>;

/// Queues `data` on `channel`; false when the session is gone.
pub(crate) async fn send(out: &OutTx, channel: u32, data: impl Into<Bytes>) -> bool {
    out.send(Out::Data(channel, data.into())).await.is_ok()
}

pub(crate) async fn close(out: &OutTx, channel: u32) -> bool {
    out.send(Out::Close(channel)).await.is_ok()
}

/// The client's stdin (or a port's inbound data) as an `AsyncRead`: end of
/// file once the client ends the channel or the session is gone.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Bytes>) -> ChannelReader {
        ChannelReader {
            rx,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(data) => self.pending = data,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// An output channel as an `AsyncWrite`. Shutting it down does not end the
/// channel: the session does that once the backend is done, after all data.
pub(crate) struct ChannelWriter {
    channel: u32,
    tx: PollSender<Out>,
}

impl ChannelWriter {
    pub(crate) fn new(out: OutTx, channel: u32) -> ChannelWriter {
        ChannelWriter {
            channel,
            tx: PollSender::new(out),
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the streaming client is gone")
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| gone())?;
        let n = buf.len().min(MAX_CHUNK);
        let channel = self.channel;
        self.tx
            .send_item(Out::Data(channel, Bytes::copy_from_slice(&buf[..n])))
            .map_err(|_| gone())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// When the connection last carried a frame, either way.
#[derive(Clone)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once nothing has moved for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let deadline = self.last() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// Runs a session: the transport's `reader` (client → channels), `logic`
/// (the protocol) and `writer` (queued output → client) together. The
/// session ends when the logic is done, the client is gone (reader or writer
/// ends) or the connection is idle for `idle`. The logic and reader are then
/// dropped — with them the backend's work — and the writer gets a bounded
/// time to deliver what was queued (it ends once every sender is dropped).
pub(crate) async fn drive(
    reader: impl Future<Output = ()>,
    logic: impl Future<Output = ()>,
    writer: impl Future<Output = ()>,
    activity: &Activity,
    idle: Duration,
) {
    tokio::pin!(writer);
    let writer_done = {
        let session = async {
            tokio::select! {
                () = reader => tracing::debug!("streaming client closed the connection"),
                () = logic => {}
                () = activity.idle(idle) => tracing::info!(?idle, "streaming session idle; closing"),
            }
        };
        tokio::select! {
            () = &mut writer => true,
            () = session => false,
        }
    };
    if !writer_done && tokio::time::timeout(DRAIN_TIMEOUT, writer).await.is_err() {
        tracing::info!("streaming client did not take the last output in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reader_yields_data_then_eof() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"hello ")).await.expect("send");
        tx.send(Bytes::from_static(b"world")).await.expect("send");
        drop(tx);
        let mut text = String::new();
        ChannelReader::new(rx)
            .read_to_string(&mut text)
            .await
            .expect("read");
        assert_eq!(text, "hello world");
    }

    #[tokio::test]
    async fn writer_chunks_and_fails_once_session_is_gone() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut writer = ChannelWriter::new(tx, 7);
        let big = vec![b'x'; MAX_CHUNK + 10];
        let n = writer.write(&big).await.expect("write");
        assert_eq!(n, MAX_CHUNK);
        match rx.recv().await {
            Some(Out::Data(7, data)) => assert_eq!(data.len(), MAX_CHUNK),
            other => panic!("unexpected {other:?}"),
        }
        drop(rx);
        let err = writer.write_all(b"more").await.expect_err("session gone");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
