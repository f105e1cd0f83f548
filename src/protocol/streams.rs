//! Feature `streams`: publishes kept in declared streams, read back with
//! `replay` or by a durable consumer (`consume`, `stream_ack`). The requests,
//! and the frames that answer them.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Head, Op, ProtocolError};
use crate::frame;

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq)]
pub enum From {
    First,
    /// The last stored message.
    Last,
    /// Nothing stored: only `replay_end`, with the last seq.
    New,
    Seq(u64),
    /// The first message at or after this Unix time, in ms.
    Time(u64),
    Id(Box<str>),
}

#[derive(Debug)]
pub enum StreamOp {
    Replay {
        stream: Box<str>,
        subject: Option<Box<str>>,
        from: From,
    },
    Info {
        stream: Box<str>,
    },
    List,
    Consume(Box<Consume>),
    Ack {
        stream: Box<str>,
        durable: Box<str>,
        seq: u64,
        op: AckOp,
        /// For `nak`: when to deliver it again.
        delay_ms: u64,
    },
    /// Stop consuming: the consumer's unacknowledged messages are delivered
    /// again to whoever consumes it next.
    Unconsume {
        stream: Box<str>,
        durable: Box<str>,
    },
    DeleteConsumer {
        stream: Box<str>,
        durable: Box<str>,
    },
}

/// `consume`: the consumer to create, or to bind this session to.
#[derive(Debug)]
pub struct Consume {
    pub stream: Box<str>,
    pub durable: Box<str>,
    /// Only messages whose subject matches (fixed when it is created).
    pub subject: Option<Box<str>>,
    /// Where a new consumer starts (ignored for an existing one).
    pub from: From,
    pub ack_wait_ms: Option<u64>,
    pub max_deliver: Option<u32>,
    pub max_ack_pending: Option<u32>,
}

/// Limits and defaults of a consumer's settings.
pub const ACK_WAIT_DEFAULT_MS: u64 = 30_000;
pub const ACK_WAIT_MAX_MS: u64 = 24 * 3600 * 1000;
pub const MAX_DELIVER_DEFAULT: u32 = 5;
pub const MAX_DELIVER_MAX: u32 = 10_000;
pub const MAX_ACK_PENDING_DEFAULT: u32 = 1000;
pub const MAX_ACK_PENDING_MAX: u32 = 10_000;
pub const NAK_DELAY_MAX_MS: u64 = 30 * 24 * 3600 * 1000;

/// What `stream_ack` says of a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOp {
    /// Done with it: never delivered again.
    Ack,
    /// Not done: deliver it again (after `delay_ms`).
    Nak,
    /// Never deliver it again, not done (a message it cannot handle).
    Term,
    /// Still working on it: the ack wait starts again.
    Progress,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FromWire<'a> {
    Word(#[serde(borrow)] Cow<'a, str>),
    Seq {
        seq: u64,
    },
    Time {
        time_ms: u64,
    },
    Id {
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
}

fn parse_from(from: Option<FromWire<'_>>) -> Result<From, ProtocolError> {
    let bad_from = || {
        ProtocolError::bad_request(
            "field `from` must be \"first\", \"last\", \"new\", {\"seq\":n}, {\"time_ms\":t} or {\"id\":…}",
        )
    };
    Ok(match from {
        None => From::First,
        Some(FromWire::Word(word)) => match word.as_ref() {
            "first" => From::First,
            "last" => From::Last,
            "new" => From::New,
            _ => return Err(bad_from()),
        },
        Some(FromWire::Seq { seq }) => From::Seq(seq),
        Some(FromWire::Time { time_ms }) => From::Time(time_ms),
        Some(FromWire::Id { id }) => From::Id(id.into()),
    })
}

fn check_filter(subject: Option<&Cow<'_, str>>) -> Result<(), ProtocolError> {
    match subject {
        Some(p) => crate::subject::check_pattern(p.as_ref()).map_err(super::envelope::bad_subject),
        None => Ok(()),
    }
}

pub(super) fn parse_replay(_: &Head<'_>, text: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        stream: Cow<'a, str>,
        #[serde(borrow)]
        subject: Option<Cow<'a, str>>,
        #[serde(borrow)]
        from: Option<FromWire<'a>>,
    }
    let w: Wire = serde_json::from_str(text)
        .map_err(|e| ProtocolError::bad_request(format!("invalid `replay`: {e}")))?;
    check_filter(w.subject.as_ref())?;
    Ok(Op::Stream(Box::new(StreamOp::Replay {
        stream: w.stream.into(),
        subject: w.subject.as_deref().map(Into::into),
        from: parse_from(w.from)?,
    })))
}

/// A durable consumer's name: 1 to 64 letters, digits, `-` or `_`.
pub fn check_name(what: &str, name: &str) -> Result<(), ProtocolError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::bad_request(format!(
            "field `{what}` must be 1 to 64 letters, digits, `-` or `_`"
        )))
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: Option<T>,
    min: T,
    max: T,
) -> Result<Option<T>, ProtocolError> {
    match value {
        Some(v) if v < min || v > max => Err(ProtocolError::bad_request(format!(
            "field `{field}` must be {min} to {max}"
        ))),
        v => Ok(v),
    }
}

pub(super) fn parse_consume(_: &Head<'_>, text: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        stream: Cow<'a, str>,
        #[serde(borrow)]
        durable: Cow<'a, str>,
        #[serde(borrow)]
        subject: Option<Cow<'a, str>>,
        #[serde(borrow)]
        from: Option<FromWire<'a>>,
        ack_wait_ms: Option<u64>,
        max_deliver: Option<u32>,
        max_ack_pending: Option<u32>,
    }
    let w: Wire = serde_json::from_str(text)
        .map_err(|e| ProtocolError::bad_request(format!("invalid `consume`: {e}")))?;
    check_name("durable", &w.durable)?;
    check_filter(w.subject.as_ref())?;
    Ok(Op::Stream(Box::new(StreamOp::Consume(Box::new(Consume {
        stream: w.stream.into(),
        durable: w.durable.into(),
        subject: w.subject.as_deref().map(Into::into),
        from: parse_from(w.from)?,
        ack_wait_ms: in_range("ack_wait_ms", w.ack_wait_ms, 100, ACK_WAIT_MAX_MS)?,
        max_deliver: in_range("max_deliver", w.max_deliver, 1, MAX_DELIVER_MAX)?,
        max_ack_pending: in_range("max_ack_pending", w.max_ack_pending, 1, MAX_ACK_PENDING_MAX)?,
    })))))
}

pub(super) fn parse_ack(_: &Head<'_>, text: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        stream: Cow<'a, str>,
        #[serde(borrow)]
        durable: Cow<'a, str>,
        seq: u64,
        op: Option<AckOp>,
        delay_ms: Option<u64>,
    }
    let w: Wire = serde_json::from_str(text).map_err(|e| {
        ProtocolError::bad_request(format!(
            "invalid `stream_ack` (`op` is ack, nak, term or progress): {e}"
        ))
    })?;
    Ok(Op::Stream(Box::new(StreamOp::Ack {
        stream: w.stream.into(),
        durable: w.durable.into(),
        seq: w.seq,
        op: w.op.unwrap_or(AckOp::Ack),
        delay_ms: in_range("delay_ms", w.delay_ms, 0, NAK_DELAY_MAX_MS)?.unwrap_or(0),
    })))
}

#[derive(Deserialize)]
struct ConsumerWire<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    durable: Cow<'a, str>,
}

fn consumer_wire<'a>(kind: &str, text: &'a str) -> Result<ConsumerWire<'a>, ProtocolError> {
    serde_json::from_str(text)
        .map_err(|e| ProtocolError::bad_request(format!("invalid `{kind}`: {e}")))
}

pub(super) fn parse_unconsume(_: &Head<'_>, text: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    let w = consumer_wire("unconsume", text)?;
    Ok(Op::Stream(Box::new(StreamOp::Unconsume {
        stream: w.stream.into(),
        durable: w.durable.into(),
    })))
}

pub(super) fn parse_consumer_delete(
    _: &Head<'_>,
    text: &str,
    _: &Bytes,
) -> Result<Op, ProtocolError> {
    let w = consumer_wire("consumer_delete", text)?;
    Ok(Op::Stream(Box::new(StreamOp::DeleteConsumer {
        stream: w.stream.into(),
        durable: w.durable.into(),
    })))
}

pub(super) fn parse_info(_: &Head<'_>, text: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        stream: Cow<'a, str>,
    }
    let w: Wire = serde_json::from_str(text)
        .map_err(|e| ProtocolError::bad_request(format!("invalid `stream_info`: {e}")))?;
    Ok(Op::Stream(Box::new(StreamOp::Info {
        stream: w.stream.into(),
    })))
}

pub(super) fn parse_list(_: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    Ok(Op::Stream(Box::new(StreamOp::List)))
}

/// A stream as `stream_info` and `stream_list` describe it.
#[derive(Debug, Serialize)]
pub struct Info<'a> {
    pub name: &'a str,
    pub subjects: &'a [String],
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_age_s: Option<f64>,
}

pub fn info(info: &Info<'_>, consumers: &[ConsumerInfo<'_>]) -> Bytes {
    #[derive(Serialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        info: &'a Info<'a>,
        consumers: &'a [ConsumerInfo<'a>],
    }
    frame::encode_json(&Wire {
        kind: "stream_info",
        info,
        consumers,
    })
}

pub fn list(infos: &[Info<'_>]) -> Bytes {
    frame::encode_json(&serde_json::json!({"type": "stream_list", "streams": infos}))
}

/// `{"type":"replaying","replay":n,"stream":S,"first_seq":a,"last_seq":b}`
pub fn replaying(replay: u64, stream: &str, first_seq: u64, last_seq: u64) -> Bytes {
    frame::encode_json(&serde_json::json!({
        "type": "replaying", "replay": replay, "stream": stream,
        "first_seq": first_seq, "last_seq": last_seq,
    }))
}

/// Bytes a `stream_event` may take beyond the `event` a publish makes (its
/// `durable` and `stream` names, `seq`, `deliveries`, `ts_ms`, `uid`, `replay`):
/// a publish kept in a stream must leave this much room under the frame limit.
pub const EVENT_EXTRA: usize = 400;

/// A stored message, replayed or delivered to a durable consumer.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<&'a str>,
    pub stream: &'a str,
    pub seq: u64,
    /// How many times a consumer's message was delivered, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u32>,
    pub id: &'a str,
    pub ts_ms: u64,
    pub subject: &'a str,
    pub from: Option<&'a str>,
    pub uid: Option<u32>,
    pub body: Option<&'a RawValue>,
}

pub fn event(e: &Event<'_>) -> Bytes {
    #[derive(Serialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        event: &'a Event<'a>,
    }
    frame::encode_json(&Wire {
        kind: "stream_event",
        event: e,
    })
}

/// `{"type":"consuming","stream","durable","created","next_seq","pending",…settings}`
pub fn consuming(c: &ConsumerInfo<'_>, created: bool) -> Bytes {
    #[derive(Serialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        created: bool,
        #[serde(flatten)]
        info: &'a ConsumerInfo<'a>,
    }
    frame::encode_json(&Wire {
        kind: "consuming",
        created,
        info: c,
    })
}

/// A durable consumer as `consuming` and `stream_info` describe it.
#[derive(Debug, Serialize)]
pub struct ConsumerInfo<'a> {
    pub stream: &'a str,
    pub durable: &'a str,
    pub subject: Option<&'a str>,
    /// The first message never delivered to it.
    pub next_seq: u64,
    /// Delivered and not acknowledged yet (or waiting to be delivered again).
    pub pending: usize,
    /// Whether a connection consumes it now.
    pub consuming: bool,
    pub ack_wait_ms: u64,
    pub max_deliver: u32,
    pub max_ack_pending: u32,
    /// Since the daemon started: messages given up after `max_deliver`, and
    /// messages trimmed from the stream before the consumer got or acked them.
    pub dead: u64,
    pub trimmed: u64,
}

/// `{"type":"stream_acked","stream","durable","seq","op"}`
pub fn acked(stream: &str, durable: &str, seq: u64, op: AckOp) -> Bytes {
    frame::encode_json(&serde_json::json!({
        "type": "stream_acked", "stream": stream, "durable": durable, "seq": seq, "op": op,
    }))
}

/// `{"type":kind,"stream","durable"}`: `unconsumed`, `consumer_deleted`.
pub fn consumer_done(kind: &str, stream: &str, durable: &str) -> Bytes {
    frame::encode_json(&serde_json::json!({"type": kind, "stream": stream, "durable": durable}))
}

pub fn replay_end(replay: u64, stream: &str, last_seq: u64) -> Bytes {
    frame::encode_json(&serde_json::json!({
        "type": "replay_end", "replay": replay, "stream": stream, "last_seq": last_seq,
    }))
}

/// JSON text the bus stored, as a raw value.
pub fn raw(json: &[u8]) -> Option<&RawValue> {
    std::str::from_utf8(json)
        .ok()
        .and_then(|t| serde_json::from_str(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, ErrorCode};

    fn op(json: &str) -> Result<StreamOp, ProtocolError> {
        match parse(frame::encode(json.as_bytes())).op {
            Op::Stream(s) => Ok(*s),
            Op::Invalid(e) => Err(*e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replay_from_every_kind_of_start() {
        for (from, want) in [
            (r#""first""#, From::First),
            (r#""last""#, From::Last),
            (r#""new""#, From::New),
            (r#"{"seq":7}"#, From::Seq(7)),
            (r#"{"time_ms":9}"#, From::Time(9)),
            (r#"{"id":"x"}"#, From::Id("x".into())),
        ] {
            let json = format!(r#"{{"type":"replay","stream":"s","from":{from}}}"#);
            match op(&json).unwrap() {
                StreamOp::Replay { from, .. } => assert_eq!(from, want),
                other => panic!("{other:?}"),
            }
        }
        let e = op(r#"{"type":"replay","stream":"s","from":"middle"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn consume_and_stream_ack_check_their_fields() {
        match op(r#"{"type":"consume","stream":"s","durable":"d"}"#).unwrap() {
            StreamOp::Consume(c) => {
                assert_eq!(
                    (c.from, c.ack_wait_ms, c.max_deliver),
                    (From::First, None, None)
                )
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"type":"consume","stream":"s","durable":"a.b"}"#,
            r#"{"type":"consume","stream":"s","durable":""}"#,
            r#"{"type":"consume","stream":"s","durable":"d","max_ack_pending":0}"#,
            r#"{"type":"consume","stream":"s","durable":"d","max_ack_pending":10001}"#,
            r#"{"type":"consume","stream":"s","durable":"d","ack_wait_ms":5}"#,
            r#"{"type":"consume","stream":"s","durable":"d","max_deliver":0}"#,
            r#"{"type":"stream_ack","stream":"s","durable":"d","seq":1,"op":"maybe"}"#,
            r#"{"type":"stream_ack","stream":"s","durable":"d"}"#,
        ] {
            assert_eq!(op(bad).unwrap_err().code, ErrorCode::BadRequest, "{bad}");
        }
        let e =
            op(r#"{"type":"consume","stream":"s","durable":"d","subject":"a..b"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSubject);
        match op(
            r#"{"type":"stream_ack","stream":"s","durable":"d","seq":3,"op":"nak","delay_ms":50}"#,
        )
        .unwrap()
        {
            StreamOp::Ack {
                seq, op, delay_ms, ..
            } => {
                assert_eq!((seq, op, delay_ms), (3, AckOp::Nak, 50))
            }
            other => panic!("{other:?}"),
        }
    }
}
