//! Adapters for the servers the load generator can drive: Rookery's protocol, Socket.IO v4
//! (Engine.IO framing over WebSocket) and the raw forwarder. Each adapter says how to connect,
//! how to encode a send and how to read what comes back; the scenarios are the same for all.

use serde::Deserialize;

/// Which server is under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Rookery (`/ws`, JSON ops, acks after durable storage).
    Rookery,
    /// A Socket.IO v4 server (`sendMessage` with an ack, `messageReceived` to the room).
    Socketio,
    /// The raw forwarder (`<room>\n<payload>` text frames, no ack).
    Raw,
}

/// What a text frame from the server means to the load generator.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// The server is ready (Rookery `hello`, Socket.IO namespace connect).
    Ready,
    /// A send was acknowledged; `k` is the sender's message number.
    Ack { k: u64, seq: Option<u64> },
    /// A message from the load: its room, sender connection, number, intended send time.
    Msg { room: usize, sender: u32, k: u64, intended_ns: u64, seq: Option<u64> },
    /// An error answer; `k` when it belongs to a send.
    Error { code: String, k: Option<u64> },
    /// Rookery `synced`; `more` when some conversation has more to send (`has_more`).
    Synced { more: bool },
    /// Something to answer with this text frame (Engine.IO ping → pong).
    Reply(String),
    /// Anything else (receipts, presence, Engine.IO open packet, ...).
    Other,
}

/// The body every load message carries, so receivers can identify it and time it without any
/// shared state: `s<sender>k<k>t<intended ns>|<padding>`.
pub fn body(sender: u32, k: u64, intended_ns: u64, size: usize) -> String {
    let mut b = format!("s{sender}k{k}t{intended_ns}|");
    while b.len() < size {
        b.push('x');
    }
    b
}

/// The sender, message number and intended send time a load message's body carries.
pub fn parse_body(body: &str) -> Option<(u32, u64, u64)> {
    let rest = body.strip_prefix('s')?;
    let (sender, rest) = rest.split_once('k')?;
    let (k, rest) = rest.split_once('t')?;
    let t = rest.split('|').next()?;
    Some((sender.parse().ok()?, k.parse().ok()?, t.parse().ok()?))
}

impl Target {
    /// The path (and query) to open for a connection of `user` in `rooms`.
    pub fn path(self, user: &str, rooms: &[String]) -> String {
        match self {
            Target::Rookery => "/ws".to_string(),
            Target::Socketio => "/socket.io/?EIO=4&transport=websocket".to_string(),
            Target::Raw => format!("/ws?user={user}&rooms={}", rooms.join(",")),
        }
    }

    /// Frames to send right after the upgrade.
    pub fn greeting(self, user: &str, rooms: &[String]) -> Option<String> {
        match self {
            Target::Socketio => Some(format!("40{}", serde_json::json!({"user": user, "rooms": rooms}))),
            _ => None,
        }
    }

    /// Whether the connection is ready as soon as it is upgraded.
    pub fn ready_on_upgrade(self) -> bool {
        self == Target::Raw
    }

    /// Whether sends get an ack.
    pub fn acks(self) -> bool {
        self != Target::Raw
    }

    /// The frame that sends message `k` to `room` (named `room_name` on the wire). `echo`: ask
    /// Rookery to send the message back to the sending session too (the other servers never do).
    pub fn send_frame(self, room_name: &str, k: u64, body: &str, echo: bool) -> String {
        match self {
            Target::Rookery => serde_json::json!(
                {"op": "send", "conv": room_name, "client_id": k.to_string(), "body": body, "echo": echo}
            )
            .to_string(),
            Target::Socketio => {
                let payload = serde_json::json!({"room": room_name, "client_id": k.to_string(), "body": body});
                format!("42{k}[\"sendMessage\",{payload}]")
            }
            Target::Raw => format!("{room_name}\n{body}"),
        }
    }

    /// The frame that asks Rookery for everything after `since` (after a reconnect).
    pub fn sync_frame(self, since: &[(String, u64)]) -> Option<String> {
        (self == Target::Rookery).then(|| {
            let map: serde_json::Map<String, serde_json::Value> =
                since.iter().map(|(c, s)| (c.clone(), (*s).into())).collect();
            serde_json::json!({"op": "sync", "since": map}).to_string()
        })
    }

    /// Reads one text frame. `room_of` maps a wire room name to the room index.
    pub fn parse(self, text: &str, room_of: &dyn Fn(&str) -> Option<usize>) -> Incoming {
        match self {
            Target::Rookery => parse_rookery(text, room_of),
            Target::Socketio => parse_socketio(text, room_of),
            Target::Raw => {
                let Some((room, body)) = text.split_once('\n') else {
                    return Incoming::Other;
                };
                match (room_of(room), parse_body(body)) {
                    (Some(room), Some((sender, k, intended_ns))) => {
                        Incoming::Msg { room, sender, k, intended_ns, seq: None }
                    }
                    _ => Incoming::Other,
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct RookeryEvent<'a> {
    op: &'a str,
    #[serde(default)]
    client_id: Option<&'a str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    conv: Option<&'a str>,
    #[serde(default, borrow)]
    body: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    code: Option<&'a str>,
    #[serde(default)]
    has_more: Option<std::collections::HashMap<&'a str, bool>>,
}

fn parse_rookery(text: &str, room_of: &dyn Fn(&str) -> Option<usize>) -> Incoming {
    let Ok(e) = serde_json::from_str::<RookeryEvent<'_>>(text) else {
        return Incoming::Other;
    };
    match e.op {
        "hello" => Incoming::Ready,
        "ack" => match e.client_id.and_then(|c| c.parse().ok()) {
            Some(k) => Incoming::Ack { k, seq: e.seq },
            None => Incoming::Other,
        },
        "msg" => {
            let room = e.conv.and_then(room_of);
            match (room, e.body.as_deref().and_then(parse_body)) {
                (Some(room), Some((sender, k, intended_ns))) => {
                    Incoming::Msg { room, sender, k, intended_ns, seq: e.seq }
                }
                _ => Incoming::Other,
            }
        }
        "error" => Incoming::Error {
            code: e.code.unwrap_or("unknown").to_string(),
            k: e.client_id.and_then(|c| c.parse().ok()),
        },
        "synced" => Incoming::Synced { more: e.has_more.is_some_and(|m| m.values().any(|v| *v)) },
        _ => Incoming::Other,
    }
}

#[derive(Deserialize)]
struct SioMsg<'a> {
    room: &'a str,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow)]
    body: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct SioAck {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

fn parse_socketio(text: &str, room_of: &dyn Fn(&str) -> Option<usize>) -> Incoming {
    if text == "2" {
        return Incoming::Reply("3".into());
    }
    if text.starts_with("40") {
        return Incoming::Ready;
    }
    if let Some(rest) = text.strip_prefix("43") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(k) = rest[..digits].parse::<u64>() else {
            return Incoming::Other;
        };
        return match serde_json::from_str::<(SioAck,)>(&rest[digits..]) {
            Ok((SioAck { error: Some(code), .. },)) => Incoming::Error { code, k: Some(k) },
            Ok((ack,)) => Incoming::Ack { k, seq: ack.seq },
            Err(_) => Incoming::Other,
        };
    }
    if let Some(rest) = text.strip_prefix("42") {
        if let Ok((name, msg)) = serde_json::from_str::<(&str, SioMsg<'_>)>(rest) {
            if name == "messageReceived" {
                if let (Some(room), Some((sender, k, intended_ns))) = (room_of(msg.room), parse_body(&msg.body)) {
                    return Incoming::Msg { room, sender, k, intended_ns, seq: msg.seq };
                }
            }
        }
    }
    Incoming::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(name: &str) -> Option<usize> {
        name.strip_prefix('r').and_then(|n| n.parse().ok())
    }

    #[test]
    fn bodies_round_trip() {
        let b = body(7, 42, 123_456, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_body(&b), Some((7, 42, 123_456)));
    }

    #[test]
    fn parses_each_target() {
        let b = body(3, 9, 77, 0);
        let msg = Incoming::Msg { room: 5, sender: 3, k: 9, intended_ns: 77, seq: Some(2) };
        let rookery = format!(r#"{{"op":"msg","conv":"r5","seq":2,"sender":"u","body":"{b}","id":"x"}}"#);
        assert_eq!(Target::Rookery.parse(&rookery, &rooms), msg);
        assert_eq!(
            Target::Rookery.parse(r#"{"op":"ack","client_id":"9","seq":2}"#, &rooms),
            Incoming::Ack { k: 9, seq: Some(2) }
        );
        let sio = format!(r#"42["messageReceived",{{"room":"r5","seq":2,"body":"{b}"}}]"#);
        assert_eq!(Target::Socketio.parse(&sio, &rooms), msg);
        assert_eq!(
            Target::Socketio.parse(r#"439[{"seq":2,"id":"r5:2"}]"#, &rooms),
            Incoming::Ack { k: 9, seq: Some(2) }
        );
        assert_eq!(
            Target::Rookery.parse(r#"{"op":"synced","convs":{"r5":9},"has_more":{"r5":true}}"#, &rooms),
            Incoming::Synced { more: true }
        );
        assert_eq!(
            Target::Rookery.parse(r#"{"op":"synced","convs":{"r5":9},"has_more":{"r5":false}}"#, &rooms),
            Incoming::Synced { more: false }
        );
        assert_eq!(Target::Socketio.parse("2", &rooms), Incoming::Reply("3".into()));
        assert_eq!(
            Target::Rookery.send_frame("r1", 4, "hi", false),
            r#"{"body":"hi","client_id":"4","conv":"r1","echo":false,"op":"send"}"#
        );
        let raw = format!("r5\n{b}");
        assert_eq!(
            Target::Raw.parse(&raw, &rooms),
            Incoming::Msg { room: 5, sender: 3, k: 9, intended_ns: 77, seq: None }
        );
        assert_eq!(
            Target::Socketio.send_frame("r1", 4, "hi", false),
            r#"424["sendMessage",{"body":"hi","client_id":"4","room":"r1"}]"#
        );
    }
}
