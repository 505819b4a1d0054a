//! The gateway's WebSocket read path (RFC 6455 section 5.2): frame headers parsed and client
//! payloads unmasked in a buffer that exists only while frames are arriving.
//!
//! fastwebsockets does the upgrade; after it, a connection reads its frames here. The library's
//! reader keeps an 8 KiB buffer for a connection's whole life, which was the largest single
//! item of an idle connection's memory. Here an idle connection holds no read buffer: a read
//! lands in a scratch array on the stack of the poll that performs it, and only the bytes that
//! arrived are copied to the heap, in a buffer sized to the frame being read. A frame whose
//! header declares more than the limit is refused before any of its payload is buffered.
//!
//! The rules about what frames mean (fragments, control frames, UTF-8, close codes) are in
//! [`crate::frames`]; this module only cuts the byte stream into frames.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use crate::frames::Op;

/// The stack scratch a read lands in before its bytes are copied to the heap.
const READ_CHUNK: usize = 4096;

/// One frame off the wire, payload unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct WireFrame {
    pub op: Op,
    pub fin: bool,
    pub masked: bool,
    pub payload: BytesMut,
}

/// Why a connection cannot read another frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the stream or it failed; nothing to answer.
    Closed,
    /// Reserved bits or opcodes, a fragmented or long control frame, a 64-bit length with its
    /// top bit set: close with 1002.
    Protocol,
    /// The frame declares more payload than the limit: close with 1009.
    TooBig,
}

/// A frame's header: what it is and how many bytes it and its payload take.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    op: Op,
    fin: bool,
    mask: Option<[u8; 4]>,
    head_len: usize,
    payload_len: usize,
}

/// Parses the header at the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_head(buf: &[u8], max: usize) -> Result<Option<Head>, ReadError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        // No extension is negotiated, so every reserved bit must be 0.
        return Err(ReadError::Protocol);
    }
    let op = match b0 & 0x0F {
        0x0 => Op::Continuation,
        0x1 => Op::Text,
        0x2 => Op::Binary,
        0x8 => Op::Close,
        0x9 => Op::Ping,
        0xA => Op::Pong,
        _ => return Err(ReadError::Protocol),
    };
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let (extra, short) = match b1 & 0x7F {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(n as u64)),
    };
    if buf.len() < 2 + extra {
        return Ok(None);
    }
    let mut rest = &buf[2..];
    let declared = match short {
        Some(n) => n,
        None if extra == 2 => u64::from(rest.get_u16()),
        None => rest.get_u64(),
    };
    if declared >> 63 != 0 {
        return Err(ReadError::Protocol);
    }
    let control = matches!(op, Op::Close | Op::Ping | Op::Pong);
    if control && (!fin || declared > 125) {
        return Err(ReadError::Protocol);
    }
    if declared > max as u64 {
        return Err(ReadError::TooBig);
    }
    // Refused above from the length alone; the mask key is only needed to read the payload.
    let head_len = 2 + extra + if masked { 4 } else { 0 };
    if buf.len() < head_len {
        return Ok(None);
    }
    let mask = masked.then(|| rest.get_u32().to_be_bytes());
    Ok(Some(Head { op, fin, mask, head_len, payload_len: declared as usize }))
}

/// XORs `payload` with the 4-byte key, 8 bytes at a time where it can.
fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Cuts a byte stream into frames of at most `max` payload bytes each.
#[derive(Debug)]
pub struct FrameReader {
    max: usize,
    /// Bytes received and not yet returned as a frame; empty, with nothing allocated, between
    /// frames.
    buf: BytesMut,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        FrameReader { max, buf: BytesMut::new() }
    }

    /// The next frame. Cancel-safe: bytes already read stay for the next call.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<WireFrame, ReadError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            let n = poll_fn(|cx| self.poll_fill(cx, io)).await.map_err(|_| ReadError::Closed)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    /// A whole frame from the buffer, if one is there.
    fn take_frame(&mut self) -> Result<Option<WireFrame>, ReadError> {
        let Some(head) = parse_head(&self.buf, self.max)? else { return Ok(None) };
        let total = head.head_len + head.payload_len;
        if self.buf.len() < total {
            // Room for the rest of this frame, so the reads that complete it copy once.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let mut payload = self.buf.split_to(total).split_off(head.head_len);
        if let Some(key) = head.mask {
            unmask(&mut payload, key);
        }
        if self.buf.is_empty() {
            // Drop the handle on the shared allocation: it is freed with the payload.
            self.buf = BytesMut::new();
        }
        Ok(Some(WireFrame { op: head.op, fin: head.fin, masked: head.mask.is_some(), payload }))
    }

    /// One read from `io`, appended to the buffer; the number of bytes read.
    fn poll_fill<R: AsyncRead + Unpin>(&mut self, cx: &mut Context<'_>, io: &mut R) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() >= READ_CHUNK {
            // A large frame is arriving and has its room reserved: read straight into it.
            return tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf);
        }
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(io).poll_read(cx, &mut read))?;
        self.buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    }
}

/// Cuts `bytes` into frames as [`FrameReader`] does: the frames, then the error that ended the
/// input, or `None` when it ended between frames or inside one. For tests and fuzzing.
pub fn frames_of(bytes: &[u8], max: usize) -> (Vec<WireFrame>, Option<ReadError>) {
    let mut reader = FrameReader::new(max);
    reader.buf.extend_from_slice(bytes);
    let mut frames = Vec::new();
    loop {
        match reader.take_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: FIN as given, masked with a fixed key.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    #[test]
    fn frames_of_every_length_encoding_are_cut_and_unmasked() {
        let long = vec![b'x'; 70_000];
        let mid = vec![b'y'; 300];
        let mut wire = client_frame(0x81, b"hello");
        wire.extend(client_frame(0x01, &mid));
        wire.extend(client_frame(0x80, &long));
        wire.extend(client_frame(0x89, b"ping"));
        let (frames, end) = frames_of(&wire, 100_000);
        assert_eq!(end, None);
        assert_eq!(frames.len(), 4);
        assert_eq!((frames[0].op, frames[0].fin, frames[0].masked), (Op::Text, true, true));
        assert_eq!(&frames[0].payload[..], b"hello");
        assert_eq!((frames[1].op, frames[1].fin), (Op::Text, false));
        assert_eq!(frames[1].payload, mid[..]);
        assert_eq!((frames[2].op, frames[2].fin), (Op::Continuation, true));
        assert_eq!(frames[2].payload, long[..]);
        assert_eq!((frames[3].op, &frames[3].payload[..]), (Op::Ping, &b"ping"[..]));
    }

    #[test]
    fn an_unmasked_frame_is_reported_as_such() {
        let (frames, _) = frames_of(b"\x81\x02hi", 100);
        assert!(!frames[0].masked);
        assert_eq!(&frames[0].payload[..], b"hi");
    }

    #[test]
    fn a_frame_cut_anywhere_waits_for_the_rest() {
        let wire = client_frame(0x81, &[b'z'; 200]);
        for cut in 0..wire.len() {
            let (frames, end) = frames_of(&wire[..cut], 1000);
            assert!(frames.is_empty() && end.is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn protocol_errors_and_oversized_frames_are_refused_from_the_header() {
        let refused = |wire: &[u8], max| frames_of(wire, max).1;
        assert_eq!(refused(&client_frame(0xC1, b"x"), 10), Some(ReadError::Protocol), "RSV1");
        assert_eq!(refused(&client_frame(0x83, b"x"), 10), Some(ReadError::Protocol), "opcode 3");
        assert_eq!(refused(&client_frame(0x8B, b"x"), 10), Some(ReadError::Protocol), "opcode 0xB");
        assert_eq!(refused(&client_frame(0x09, b"x"), 10), Some(ReadError::Protocol), "fragmented ping");
        assert_eq!(refused(&client_frame(0x89, &[0; 126]), 1000), Some(ReadError::Protocol), "long ping");
        assert_eq!(refused(&client_frame(0x81, &[0; 11]), 10), Some(ReadError::TooBig));
        // Only the header is needed to refuse: a frame declaring 2^40 bytes.
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(refused(&huge, 1 << 20), Some(ReadError::TooBig));
        huge[2] = 0x80;
        assert_eq!(refused(&huge, 1 << 20), Some(ReadError::Protocol), "64-bit length with its top bit set");
    }

    #[test]
    fn unmasking_matches_the_bytewise_definition_at_every_length() {
        let key = [0xA1, 0xB2, 0xC3, 0xD4];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let mut masked: Vec<u8> = plain.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            unmask(&mut masked, key);
            assert_eq!(masked, plain, "length {len}");
        }
    }

    #[tokio::test]
    async fn a_large_frame_written_at_once_is_read_whole_and_the_next_one_after_it() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let wire = [client_frame(0x82, &big), client_frame(0x81, b"after")].concat();
        tokio::io::AsyncWriteExt::write_all(&mut client, &wire).await.unwrap();
        let mut reader = FrameReader::new(1 << 20);
        let first = reader.next(&mut server).await.unwrap();
        assert_eq!((first.op, first.payload.len()), (Op::Binary, big.len()));
        assert_eq!(first.payload, big[..]);
        assert_eq!(&reader.next(&mut server).await.unwrap().payload[..], b"after");
        assert!(reader.buf.is_empty());
    }

    #[tokio::test]
    async fn between_frames_nothing_is_held_and_a_trickled_frame_is_read_whole() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(1000);
        let wire = [client_frame(0x81, b"first"), client_frame(0x81, &[b'q'; 300])].concat();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for byte in wire {
                client.write_all(&[byte]).await.unwrap();
            }
            client
        });
        let first = reader.next(&mut server).await.unwrap();
        assert_eq!(&first.payload[..], b"first");
        let second = reader.next(&mut server).await.unwrap();
        assert_eq!(second.payload, [b'q'; 300][..]);
        assert!(reader.buf.is_empty());
        assert_eq!(reader.buf.capacity(), 0, "an idle reader holds no buffer");
        drop(writer.await.unwrap());
        assert_eq!(reader.next(&mut server).await, Err(ReadError::Closed));
    }
}
