//! WebSocket conformance, the cases of RFC 6455 as the Autobahn TestSuite groups them: control
//! frames, fragmentation, reserved bits and opcodes, UTF-8 across fragments, the close handshake.
//! A hand-written client puts exact bytes on the wire (no WebSocket library in between).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{tok, TestNode};

/// A raw WebSocket client.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug, PartialEq)]
enum In {
    Text(String),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The server closed the TCP connection.
    Eof,
}

const TEXT: u8 = 0x1;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

impl Raw {
    async fn connect(node: &TestNode, token: &str) -> Raw {
        let addr = node.base.strip_prefix("http://").unwrap().to_string();
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Raw { tcp, buf: Vec::new() };
        let head = raw.read_until_headers_end().await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
        match raw.next().await {
            In::Text(t) => assert!(t.contains("\"hello\""), "{t}"),
            other => panic!("expected hello, got {other:?}"),
        }
        raw
    }

    async fn read_until_headers_end(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            self.fill().await.expect("handshake answer");
        }
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => None,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
            Err(_) => panic!("the server sent nothing for 10 s"),
        }
    }

    /// Writes one masked frame with the given first-byte bits.
    async fn send(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) {
        self.send_masked(fin, rsv, opcode, payload, true).await
    }

    async fn send_masked(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) {
        let mut f = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n < 65536 => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x37u8, 0xfa, 0x21, 0x3d];
        if masked {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        // The server may already have closed: a failed write shows up as EOF on the next read.
        let _ = self.tcp.write_all(&f).await;
    }

    /// The next data or control frame from the server (pings from the server are skipped).
    async fn next(&mut self) -> In {
        loop {
            while self.buf.len() < 2 {
                if self.fill().await.is_none() {
                    return In::Eof;
                }
            }
            let opcode = self.buf[0] & 0x0f;
            let len0 = (self.buf[1] & 0x7f) as usize;
            let (len, head) = match len0 {
                126 => {
                    while self.buf.len() < 4 {
                        if self.fill().await.is_none() {
                            return In::Eof;
                        }
                    }
                    (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                }
                127 => {
                    while self.buf.len() < 10 {
                        if self.fill().await.is_none() {
                            return In::Eof;
                        }
                    }
                    (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                }
                n => (n, 2),
            };
            while self.buf.len() < head + len {
                if self.fill().await.is_none() {
                    return In::Eof;
                }
            }
            let payload: Vec<u8> = self.buf[head..head + len].to_vec();
            self.buf.drain(..head + len);
            match opcode {
                TEXT => return In::Text(String::from_utf8(payload).expect("the server sends UTF-8")),
                0xA => return In::Pong(payload),
                CLOSE => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return In::Close(code);
                }
                PING => continue,
                other => panic!("unexpected opcode {other}"),
            }
        }
    }

    /// Skips text frames until a close (or EOF); returns its code.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                In::Text(_) | In::Pong(_) => continue,
                In::Close(code) => return code,
                In::Eof => return None,
            }
        }
    }

    /// The next text frame as JSON, skipping pongs.
    async fn event(&mut self) -> Value {
        loop {
            match self.next().await {
                In::Text(t) => return serde_json::from_str(&t).unwrap(),
                In::Pong(_) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }
}

async fn client(node: &TestNode, name: &str) -> Raw {
    let s = node.signup(name).await;
    Raw::connect(node, tok(&s)).await
}

const PING_JSON: &[u8] = br#"{"op":"ping","t":7}"#;

#[tokio::test]
async fn control_frames() {
    let node = TestNode::start().await;
    // 2.2 / 2.3: a ping with a payload is answered by a pong with the same payload.
    let mut c = client(&node, "rfc_ping").await;
    c.send(true, 0, PING, b"hello\x00\xff").await;
    assert_eq!(c.next().await, In::Pong(b"hello\x00\xff".to_vec()));
    // 2.4: 125 bytes is the most a control frame may carry.
    c.send(true, 0, PING, &[b'x'; 125]).await;
    assert_eq!(c.next().await, In::Pong(vec![b'x'; 125]));
    // 2.10-ish: many pings in a row, each answered.
    for i in 0..10u8 {
        c.send(true, 0, PING, &[i]).await;
    }
    for i in 0..10u8 {
        assert_eq!(c.next().await, In::Pong(vec![i]));
    }
    // 2.5: a control frame over 125 bytes is a protocol error.
    c.send(true, 0, PING, &[b'x'; 126]).await;
    assert_eq!(c.close_code().await, Some(1002));

    // 5.1: a fragmented ping is a protocol error.
    let mut c = client(&node, "rfc_fragping").await;
    c.send(false, 0, PING, b"a").await;
    assert_eq!(c.close_code().await, Some(1002));
}

#[tokio::test]
async fn fragmentation() {
    let node = TestNode::start().await;
    // 5.3-5.6: a text message in fragments, with a ping between them, is reassembled; the pong
    // comes at once.
    let mut c = client(&node, "rfc_frag").await;
    c.send(false, 0, TEXT, &PING_JSON[..5]).await;
    c.send(true, 0, PING, b"mid").await;
    assert_eq!(c.next().await, In::Pong(b"mid".to_vec()));
    c.send(false, 0, CONT, &PING_JSON[5..12]).await;
    c.send(true, 0, CONT, &PING_JSON[12..]).await;
    let pong = c.event().await;
    assert_eq!((pong["op"].as_str(), pong["t"].as_i64()), (Some("pong"), Some(7)));

    // 5.9: a continuation with nothing to continue.
    let mut c = client(&node, "rfc_cont").await;
    c.send(true, 0, CONT, b"{}").await;
    assert_eq!(c.close_code().await, Some(1002));

    // 5.18-ish: a new text frame while a fragmented one is open.
    let mut c = client(&node, "rfc_interleave").await;
    c.send(false, 0, TEXT, b"{\"op\":").await;
    c.send(true, 0, TEXT, PING_JSON).await;
    assert_eq!(c.close_code().await, Some(1002));
}

#[tokio::test]
async fn reserved_bits_opcodes_and_masking() {
    let node = TestNode::start().await;
    // 3.x: RSV bits without a negotiated extension.
    for rsv in [1u8, 2, 4] {
        let mut c = client(&node, &format!("rfc_rsv{rsv}")).await;
        c.send(true, rsv, TEXT, PING_JSON).await;
        assert_eq!(c.close_code().await, Some(1002), "rsv {rsv}");
    }
    // 4.x: reserved opcodes, data (3-7) and control (0xB-0xF).
    for op in [3u8, 7, 0xB, 0xF] {
        let mut c = client(&node, &format!("rfc_op{op}")).await;
        c.send(true, 0, op, b"").await;
        assert_eq!(c.close_code().await, Some(1002), "opcode {op}");
    }
    // RFC 6455 5.1: a client frame must be masked.
    let mut c = client(&node, "rfc_unmasked").await;
    c.send_masked(true, 0, TEXT, PING_JSON, false).await;
    assert_eq!(c.close_code().await, Some(1002));
}

#[tokio::test]
async fn utf8_across_fragments() {
    let node = TestNode::start().await;
    // 6.x: a valid multi-byte character split across fragments is accepted.
    let mut c = client(&node, "rfc_utf8ok").await;
    let msg = r#"{"op":"ping","t":"κόσμε"}"#.as_bytes();
    let split = msg.iter().position(|b| *b >= 0x80).unwrap() + 1; // inside the first character
    c.send(false, 0, TEXT, &msg[..split]).await;
    c.send(true, 0, CONT, &msg[split..]).await;
    assert_eq!(c.event().await["t"], "κόσμε");
    // 6.x: invalid UTF-8 in the second fragment closes with 1007.
    let mut c = client(&node, "rfc_utf8bad").await;
    c.send(false, 0, TEXT, b"{\"op\":\"ping\",\"t\":\"").await;
    c.send(true, 0, CONT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\"}").await;
    assert_eq!(c.close_code().await, Some(1007));
}

#[tokio::test]
async fn close_handshake() {
    let node = TestNode::start().await;
    // 7.1: the server answers a close with a close (echoing the code) and ends the connection.
    let mut c = client(&node, "rfc_close").await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.send(true, 0, CLOSE, &payload).await;
    assert_eq!(c.close_code().await, Some(1000));
    assert_eq!(c.next().await, In::Eof, "the server closes the TCP connection after the handshake");
    // 7.3: a close with no payload is answered 1000.
    let mut c = client(&node, "rfc_close_empty").await;
    c.send(true, 0, CLOSE, b"").await;
    assert_eq!(c.close_code().await, Some(1000));
    // 7.3.2: a close payload of one byte is a protocol error.
    let mut c = client(&node, "rfc_close_short").await;
    c.send(true, 0, CLOSE, b"\x03").await;
    assert_eq!(c.close_code().await, Some(1002));
    // 7.9: codes that must not be sent (1005, 1006, 999, 5000) are protocol errors.
    for code in [999u16, 1005, 1006, 5000] {
        let mut c = client(&node, &format!("rfc_close{code}")).await;
        c.send(true, 0, CLOSE, &code.to_be_bytes()).await;
        assert_eq!(c.close_code().await, Some(1002), "close code {code}");
    }
    // 7.5: a close reason that is not UTF-8.
    let mut c = client(&node, "rfc_close_utf8").await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"\xff\xfe");
    c.send(true, 0, CLOSE, &payload).await;
    assert!(matches!(c.close_code().await, Some(1002) | Some(1007)));
    // After all that, the node still serves.
    let mut c = client(&node, "rfc_after").await;
    c.send(true, 0, TEXT, PING_JSON).await;
    assert_eq!(c.event().await["op"], "pong");
}
