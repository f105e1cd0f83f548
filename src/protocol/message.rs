//! `message` (hermes): routed to an endpoint or broadcast, forwarded as sent
//! with `id` and `ts` added when missing; its `ack`; a message a hook dropped.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::envelope::{body_of, opt_str, read, traceparent, Extra, Head};
use super::reply::{Reply, REPLY_PREFIX};
use super::{Op, ProtocolError};
use crate::frame::{self, HEADER_LEN};

/// A message to route.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Destination endpoint; `None` broadcasts.
    pub to: Option<Box<str>>,
    /// The complete frame to deliver (header included), with `id` and `ts` present.
    pub frame: Bytes,
    /// Emits between a client's message and this one (0 for clients' messages).
    pub hops: u8,
}

impl Routed {
    /// The message's `id`, for error and ack replies (re-reads the frame: only
    /// called off the fast path or when acks were asked for).
    pub fn id(&self) -> MsgId {
        #[derive(Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow, default)]
            id: Option<&'a RawValue>,
        }
        serde_json::from_slice::<IdOnly>(frame::payload(&self.frame))
            .ok()
            .and_then(|m| m.id)
            .map_or_else(MsgId::null, |id| MsgId::new(id.get().as_bytes()))
    }
}

/// A message's `id` as its sender wrote it (JSON text), so acks and errors
/// echo it exactly, whatever it holds (`1e999`, a lone surrogate, a long
/// integer); `null` when it had none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgId(Box<str>);

impl MsgId {
    /// `text`, JSON read from a frame; anything else is `null`.
    pub fn new(text: &[u8]) -> Self {
        std::str::from_utf8(text)
            .ok()
            .filter(|t| serde_json::from_str::<&RawValue>(t).is_ok())
            .map_or_else(Self::null, |t| MsgId(t.into()))
    }

    pub fn null() -> Self {
        MsgId("null".into())
    }

    /// The id as a JSON value to write.
    pub fn raw(&self) -> &RawValue {
        serde_json::from_str(&self.0).unwrap_or(RawValue::NULL)
    }
}

pub(crate) fn parse_message(
    head: &Head<'_>,
    text: &str,
    frame: &Bytes,
) -> Result<Op, ProtocolError> {
    let to = opt_str(head.to, "to")?
        .filter(|to| !to.is_empty())
        .map(|to| Box::<str>::from(to.as_ref()));
    // A hermes client answers a request with a message to its `reply_to`.
    if let Some(reply_to) = to.as_deref().filter(|t| t.starts_with(REPLY_PREFIX)) {
        let extra: Extra = read(text)?;
        return Ok(Op::Reply(Box::new(Reply {
            reply_to: reply_to.into(),
            body: body_of(extra.body, text, frame),
            via_message: true,
            traceparent: traceparent(extra.traceparent, text, frame)?,
            frame: frame.clone(),
        })));
    }
    // Forwarded as received when it has `id` and `ts`: an empty frame here, which
    // `parse_inner`, owning the received one, fills in (no reference count to
    // take and give back on the busiest path).
    let frame = if head.id.is_some() && head.ts.is_some() {
        Bytes::new()
    } else {
        add_id_and_ts(text, head.id.is_none(), head.ts.is_none())
    };
    Ok(Op::Message(Routed { to, frame, hops: 0 }))
}

/// Splices `"id"` and/or `"ts"` in right after the object's opening brace, so the
/// rest of the message is forwarded byte for byte. The object is known to have at
/// least the `type` member, so a trailing comma is always followed by a member.
fn add_id_and_ts(text: &str, id: bool, ts: bool) -> Bytes {
    let brace = text.find('{').map_or(0, |i| i + 1);
    let mut out = BytesMut::with_capacity(HEADER_LEN + text.len() + 80);
    out.put_u32(0);
    out.put_slice(&text.as_bytes()[..brace]);
    if id {
        out.put_slice(b"\"id\":");
        out.put_slice(&new_quoted_id());
        out.put_u8(b',');
    }
    if ts {
        out.put_slice(b"\"ts\":");
        out.put_slice(now_text(&mut [0; 32]));
        out.put_u8(b',');
    }
    out.put_slice(&text.as_bytes()[brace..]);
    let len = (out.len() - HEADER_LEN) as u32;
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// A message a filter hook dropped.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The message's `id`.
    pub id: MsgId,
    /// The hook that dropped it, and its reason.
    pub hook: String,
    pub reason: String,
    /// The frame as the hook saw it (for the monitor).
    pub frame: Bytes,
    /// It was a `request`: its sender gets a `dropped` error.
    pub was_request: bool,
}

/// An `ack` frame.
#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a RawValue,
    delivered: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// `{"type":"ack","id":…,"delivered":n}`
pub fn ack(id: &MsgId, delivered: usize) -> Bytes {
    frame::encode_json(&Ack {
        kind: "ack",
        id: id.raw(),
        delivered,
        dropped_by: None,
        reason: None,
    })
}

/// `{"type":"ack","id":…,"delivered":0,"dropped_by":hook,"reason":…}`: a filter
/// hook dropped the message.
pub fn ack_dropped(dropped: &Dropped) -> Bytes {
    frame::encode_json(&Ack {
        kind: "ack",
        id: dropped.id.raw(),
        delivered: 0,
        dropped_by: Some(&dropped.hook),
        reason: Some(&dropped.reason),
    })
}

/// A new message id, as the bus adds to messages that have none.
pub fn new_id() -> String {
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

/// [`new_id`] as a JSON string, without allocating.
pub(crate) fn new_quoted_id() -> [u8; 38] {
    let mut quoted = [b'"'; 38];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut quoted[1..37]);
    quoted
}

/// Seconds since the Unix epoch, as hermes's `time.time()`.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// [`unix_now`] as JSON text, written into `buf`.
pub(crate) fn now_text(buf: &mut [u8; 32]) -> &[u8] {
    use std::io::Write;
    let mut room = &mut buf[..];
    // Cannot fail: an f64 takes at most 24 bytes.
    let _ = write!(room, "{:?}", unix_now());
    let written = 32 - room.len();
    &buf[..written]
}
