//! SPDY/3.1 frames: the 8-byte frame header, control frames (version 3) and
//! data frames. Header blocks are (de)compressed by the connection's
//! compressor, so encoding and decoding take it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::SpdyError;
use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};

pub(crate) const VERSION: u16 = 3;
pub(crate) const FLAG_FIN: u8 = 0x01;
#[cfg(test)]
pub(crate) const FLAG_UNIDIRECTIONAL: u8 = 0x02;

pub(crate) const TYPE_SYN_STREAM: u16 = 1;
pub(crate) const TYPE_SYN_REPLY: u16 = 2;
pub(crate) const TYPE_RST_STREAM: u16 = 3;
pub(crate) const TYPE_SETTINGS: u16 = 4;
pub(crate) const TYPE_PING: u16 = 6;
pub(crate) const TYPE_GOAWAY: u16 = 7;
pub(crate) const TYPE_HEADERS: u16 = 8;
pub(crate) const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub(crate) const RST_PROTOCOL_ERROR: u32 = 1;
pub(crate) const RST_REFUSED_STREAM: u32 = 3;

/// The largest frame payload accepted from a client. Kubernetes clients send
/// at most 32 KiB of data per frame; the 24-bit length allows 16 MiB, which
/// a client could use to make the daemon buffer that much per connection.
pub(crate) const MAX_PAYLOAD: usize = 1024 * 1024;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define; ignored.
    Unknown {
        frame_type: u16,
    },
}

/// A frame as read off the wire, before its header block is decompressed.
#[derive(Debug)]
pub(crate) struct RawFrame {
    /// `Some(type)` for a control frame.
    pub(crate) control: Option<(u16, u16)>,
    pub(crate) stream_id: u32,
    pub(crate) flags: u8,
    pub(crate) payload: Bytes,
}

/// Splits one frame off the front of `buf` when it is complete.
pub(crate) fn parse_raw(buf: &mut BytesMut) -> Result<Option<RawFrame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let length = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
    if length > MAX_PAYLOAD {
        return Err(SpdyError::Protocol("frame larger than the server accepts"));
    }
    if buf.len() < 8 + length {
        buf.reserve(8 + length - buf.len());
        return Ok(None);
    }
    buf.advance(8);
    let payload = buf.split_to(length).freeze();
    if first & 0x8000_0000 != 0 {
        let version = u16::try_from((first >> 16) & 0x7fff).unwrap_or(0);
        let frame_type = u16::try_from(first & 0xffff).unwrap_or(0);
        Ok(Some(RawFrame {
            control: Some((version, frame_type)),
            stream_id: 0,
            flags,
            payload,
        }))
    } else {
        Ok(Some(RawFrame {
            control: None,
            stream_id: first & STREAM_ID_MASK,
            flags,
            payload,
        }))
    }
}

fn need(payload: &Bytes, len: usize) -> Result<(), SpdyError> {
    if payload.len() < len {
        Err(SpdyError::Protocol("control frame too short"))
    } else {
        Ok(())
    }
}

impl Frame {
    pub(crate) fn decode(
        raw: RawFrame,
        headers: &mut HeaderDecompressor,
    ) -> Result<Frame, SpdyError> {
        let Some((version, frame_type)) = raw.control else {
            return Ok(Frame::Data {
                stream_id: raw.stream_id,
                flags: raw.flags,
                data: raw.payload,
            });
        };
        if version != VERSION {
            return Err(SpdyError::Protocol("unsupported SPDY version"));
        }
        let flags = raw.flags;
        let mut p = raw.payload;
        Ok(match frame_type {
            TYPE_SYN_STREAM => {
                need(&p, 10)?;
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let associated_id = p.get_u32() & STREAM_ID_MASK;
                let priority = p.get_u8() >> 5;
                let _slot = p.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    flags,
                    headers: headers.decompress(&p)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(&p, 4)?;
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let headers = headers.decompress(&p)?;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(&p, 8)?;
                Frame::RstStream {
                    stream_id: p.get_u32() & STREAM_ID_MASK,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(&p, 4)?;
                let count = p.get_u32() as usize;
                if p.len() != count.saturating_mul(8) {
                    return Err(SpdyError::Protocol(
                        "SETTINGS length does not match its count",
                    ));
                }
                let entries = (0..count)
                    .map(|_| {
                        let flag_id = p.get_u32();
                        let flag = u8::try_from(flag_id >> 24).unwrap_or(0);
                        (flag, flag_id & 0x00ff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(&p, 4)?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                need(&p, 4)?;
                let last_good_stream_id = p.get_u32() & STREAM_ID_MASK;
                // SPDY/2 peers omit the status; treat it as OK.
                let status = if p.len() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(&p, 8)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & STREAM_ID_MASK,
                    delta: p.get_u32() & STREAM_ID_MASK,
                }
            }
            other => Frame::Unknown { frame_type: other },
        })
    }

    pub(crate) fn encode(
        &self,
        headers: &mut HeaderCompressor,
        out: &mut BytesMut,
    ) -> Result<(), SpdyError> {
        let mut body = BytesMut::new();
        let (frame_type, flags) = match self {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                put_header(out, stream_id & STREAM_ID_MASK, *flags, data.len())?;
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                headers: h,
            } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                body.put_u32(associated_id & STREAM_ID_MASK);
                body.put_u8(priority << 5);
                body.put_u8(0);
                body.extend_from_slice(&headers.compress(h)?);
                (TYPE_SYN_STREAM, *flags)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers: h,
            } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                body.extend_from_slice(&headers.compress(h)?);
                (TYPE_SYN_REPLY, *flags)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers: h,
            } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                body.extend_from_slice(&headers.compress(h)?);
                (TYPE_HEADERS, *flags)
            }
            Frame::RstStream { stream_id, status } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                body.put_u32(*status);
                (TYPE_RST_STREAM, 0)
            }
            Frame::Settings { flags, entries } => {
                body.put_u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
                for (flag, id, value) in entries {
                    body.put_u32(u32::from(*flag) << 24 | (id & 0x00ff_ffff));
                    body.put_u32(*value);
                }
                (TYPE_SETTINGS, *flags)
            }
            Frame::Ping { id } => {
                body.put_u32(*id);
                (TYPE_PING, 0)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                body.put_u32(last_good_stream_id & STREAM_ID_MASK);
                body.put_u32(*status);
                (TYPE_GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(stream_id & STREAM_ID_MASK);
                body.put_u32(delta & STREAM_ID_MASK);
                (TYPE_WINDOW_UPDATE, 0)
            }
            Frame::Unknown { .. } => {
                return Err(SpdyError::Protocol("cannot send an unknown frame"));
            }
        };
        put_header(
            out,
            0x8000_0000 | u32::from(VERSION) << 16 | u32::from(frame_type),
            flags,
            body.len(),
        )?;
        out.extend_from_slice(&body);
        Ok(())
    }
}

fn put_header(out: &mut BytesMut, first: u32, flags: u8, len: usize) -> Result<(), SpdyError> {
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= 0x00ff_ffff)
        .ok_or(SpdyError::Protocol("frame too large"))?;
    out.put_u32(first);
    out.put_u32(u32::from(flags) << 24 | len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) {
        let mut comp = HeaderCompressor::new().expect("compressor");
        let mut decomp = HeaderDecompressor::new();
        let mut wire = BytesMut::new();
        for f in frames {
            f.encode(&mut comp, &mut wire).expect("encode");
        }
        // Feed the bytes in small pieces, as a socket may deliver them.
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for chunk in wire.chunks(5) {
            buf.extend_from_slice(chunk);
            while let Some(raw) = parse_raw(&mut buf).expect("parse") {
                decoded.push(Frame::decode(raw, &mut decomp).expect("decode"));
            }
        }
        assert!(buf.is_empty());
        assert_eq!(decoded, frames);
    }

    fn h(name: &str, value: &str) -> Headers {
        Headers(vec![(name.to_string(), value.to_string())])
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: h("streamtype", "error"),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_id: 0,
                priority: 7,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: h("streamtype", "stdout"),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::default(),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_REFUSED_STREAM,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![(1, 7, 65536), (0, 4, 100)],
            },
            Frame::Ping { id: 1 },
            Frame::Headers {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: h("a", "b"),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 1 << 20,
            },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: 0,
            },
        ]);
    }

    #[test]
    fn wire_layout_matches_the_spec() {
        let mut comp = HeaderCompressor::new().expect("compressor");
        let mut wire = BytesMut::new();
        Frame::Ping { id: 0x0102_0304 }
            .encode(&mut comp, &mut wire)
            .expect("encode");
        assert_eq!(&wire[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 1, 2, 3, 4]);
        wire.clear();
        Frame::Data {
            stream_id: 5,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        }
        .encode(&mut comp, &mut wire)
        .expect("encode");
        assert_eq!(&wire[..], &[0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
        wire.clear();
        Frame::RstStream {
            stream_id: 3,
            status: RST_PROTOCOL_ERROR,
        }
        .encode(&mut comp, &mut wire)
        .expect("encode");
        assert_eq!(
            &wire[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 1]
        );
    }

    #[test]
    fn oversized_short_and_foreign_frames_are_refused() {
        let mut decomp = HeaderDecompressor::new();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0, 0x20, 0, 0][..]);
        assert!(parse_raw(&mut buf).is_err(), "2 MiB payload");
        let mut buf = BytesMut::from(&[0x80u8, 3, 0, 3, 0, 0, 0, 2, 0, 1][..]);
        let raw = parse_raw(&mut buf).expect("parse").expect("complete");
        assert!(Frame::decode(raw, &mut decomp).is_err(), "short RST_STREAM");
        let mut buf = BytesMut::from(&[0x80u8, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        let raw = parse_raw(&mut buf).expect("parse").expect("complete");
        assert!(Frame::decode(raw, &mut decomp).is_err(), "SPDY/2 frame");
        let mut buf = BytesMut::from(&[0x80u8, 3, 0, 0x42, 0, 0, 0, 0][..]);
        let raw = parse_raw(&mut buf).expect("parse").expect("complete");
        assert_eq!(
            Frame::decode(raw, &mut decomp).expect("decode"),
            Frame::Unknown { frame_type: 0x42 }
        );
    }

    #[test]
    fn incomplete_frame_waits_for_more() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0, 0, 0, 3, b'a'][..]);
        assert!(parse_raw(&mut buf).expect("parse").is_none());
        buf.extend_from_slice(b"bc");
        let raw = parse_raw(&mut buf).expect("parse").expect("complete");
        assert_eq!(&raw.payload[..], b"abc");
    }
}
