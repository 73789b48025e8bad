//! SPDY/3 name/value header blocks and their compression: one zlib stream per
//! direction for the whole connection, primed with the SPDY/3 dictionary,
//! each block ending on a sync flush so that it decodes on its own.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;

/// The dictionary of the SPDY/3 specification (section 2.6.10.1), 1423 bytes.
const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

/// A decompressed header block may be at most this large; the blocks of the
/// Kubernetes protocols are a few dozen bytes.
const MAX_BLOCK: usize = 64 * 1024;
const MAX_PAIRS: usize = 256;

/// Header names and values in order; names are lowercase on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers(pub(crate) Vec<(String, String)>);

impl Headers {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The uncompressed block: a count, then length-prefixed names and values,
    /// with the values of a repeated name joined by NUL as SPDY requires.
    pub(crate) fn encode_block(&self) -> Vec<u8> {
        let mut grouped: Vec<(String, String)> = Vec::new();
        for (name, value) in &self.0 {
            let name = name.to_ascii_lowercase();
            match grouped.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    v.push('\0');
                    v.push_str(value);
                }
                None => grouped.push((name, value.clone())),
            }
        }
        let mut out = Vec::new();
        put_len(&mut out, grouped.len());
        for (name, value) in &grouped {
            put_len(&mut out, name.len());
            out.extend_from_slice(name.as_bytes());
            put_len(&mut out, value.len());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    pub(crate) fn decode_block(block: &[u8]) -> Result<Headers, SpdyError> {
        let mut rest = block;
        let count = take_u32(&mut rest)? as usize;
        if count > MAX_PAIRS {
            return Err(SpdyError::Protocol("too many headers"));
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take_str(&mut rest)?.to_ascii_lowercase();
            let value = take_str(&mut rest)?;
            for part in value.split('\0') {
                headers.push((name.clone(), part.to_string()));
            }
        }
        Ok(Headers(headers))
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Header blocks are bounded far below 4 GiB by MAX_BLOCK and frame sizes.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, SpdyError> {
    let Some((head, tail)) = rest.split_first_chunk::<4>() else {
        return Err(SpdyError::Protocol("truncated header block"));
    };
    *rest = tail;
    Ok(u32::from_be_bytes(*head))
}

fn take_str(rest: &mut &[u8]) -> Result<String, SpdyError> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return Err(SpdyError::Protocol("truncated header block"));
    }
    let (text, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(text.to_vec()).map_err(|_| SpdyError::Protocol("header is not UTF-8"))
}

/// The compressing side of one direction of a connection.
pub(crate) struct HeaderCompressor(Compress);

impl HeaderCompressor {
    pub(crate) fn new() -> Result<HeaderCompressor, SpdyError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(DICTIONARY)
            .map_err(|_| SpdyError::Protocol("zlib refused the SPDY dictionary"))?;
        Ok(HeaderCompressor(zlib))
    }

    pub(crate) fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let input = headers.encode_block();
        let mut out = Vec::with_capacity(input.len() + 64);
        let start = self.0.total_in();
        loop {
            let consumed = usize::try_from(self.0.total_in() - start).unwrap_or(usize::MAX);
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.0
                .compress_vec(
                    &input[consumed.min(input.len())..],
                    &mut out,
                    FlushCompress::Sync,
                )
                .map_err(|_| SpdyError::Protocol("header compression failed"))?;
            let consumed = usize::try_from(self.0.total_in() - start).unwrap_or(usize::MAX);
            // A sync flush is complete once all input is in and zlib left
            // room in the output (it stops only when the buffer is full).
            if consumed >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompressing side of one direction of a connection.
pub(crate) struct HeaderDecompressor {
    zlib: Decompress,
}

impl HeaderDecompressor {
    pub(crate) fn new() -> HeaderDecompressor {
        HeaderDecompressor {
            zlib: Decompress::new(true),
        }
    }

    pub(crate) fn decompress(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.zlib.total_in();
        loop {
            let consumed = usize::try_from(self.zlib.total_in() - start).unwrap_or(usize::MAX);
            let input = block.get(consumed..).unwrap_or_default();
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            match self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::Protocol("header stream ended"));
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib.set_dictionary(DICTIONARY).map_err(|_| {
                        SpdyError::Protocol("header block needs another dictionary")
                    })?;
                    continue;
                }
                Err(_) => return Err(SpdyError::Protocol("corrupt compressed header block")),
            }
            if out.len() > MAX_BLOCK {
                return Err(SpdyError::Protocol("header block too large"));
            }
            let consumed = usize::try_from(self.zlib.total_in() - start).unwrap_or(usize::MAX);
            if consumed >= block.len() && out.len() < out.capacity() {
                return Headers::decode_block(&out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options"));
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }

    #[test]
    fn block_round_trip_lowercases_and_joins_repeated_names() {
        let h = headers(&[("streamType", "stdout"), ("Port", "80"), ("port", "81")]);
        let block = h.encode_block();
        let back = Headers::decode_block(&block).expect("decode");
        assert_eq!(
            back,
            headers(&[("streamtype", "stdout"), ("port", "80"), ("port", "81")])
        );
        assert_eq!(back.get("StreamType"), Some("stdout"));
    }

    #[test]
    fn truncated_block_is_an_error() {
        let block = headers(&[("streamtype", "error")]).encode_block();
        for cut in 1..block.len() {
            assert!(Headers::decode_block(&block[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn compression_round_trip_over_one_stream() {
        let mut comp = HeaderCompressor::new().expect("compressor");
        let mut decomp = HeaderDecompressor::new();
        let blocks = [
            headers(&[("streamtype", "error")]),
            headers(&[("streamtype", "stdin"), ("requestid", "0")]),
            Headers::default(),
            headers(&[("x", &"y".repeat(5000))]),
            headers(&[("streamtype", "error")]),
        ];
        let mut first = true;
        for h in &blocks {
            let wire = comp.compress(h).expect("compress");
            if first {
                // zlib header with FDICT set: the dictionary is required.
                assert_eq!(wire[0] & 0x0f, 8);
                assert_ne!(wire[1] & 0x20, 0);
                first = false;
            }
            assert!(wire.ends_with(&[0, 0, 0xff, 0xff]), "sync flush");
            assert_eq!(&decomp.decompress(&wire).expect("decompress"), h);
        }
    }

    #[test]
    fn garbage_is_refused() {
        let mut decomp = HeaderDecompressor::new();
        assert!(decomp.decompress(b"\x00\x01\x02garbage").is_err());
    }
}
