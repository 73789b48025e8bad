//! SPDY/3.1 as the Kubernetes clients speak it (moby/spdystream): streams
//! opened by the client with SYN_STREAM and answered with SYN_REPLY, data
//! frames ending with FIN, RST_STREAM, PING echoed, GOAWAY. spdystream does
//! no flow control (it ignores WINDOW_UPDATE), so neither does this server;
//! back-pressure comes from TCP.

mod frame;
mod headers;
mod session;

pub(crate) use session::{NewStream, serve};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpdyError {
    #[error("SPDY protocol error: {0}")]
    Protocol(&'static str),
}
