//! Feature `streams`: publishes kept in declared streams, read back with
//! `replay`. `replay`, `stream_info`, `stream_list`, and the frames that answer
//! them.

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
}

pub(super) fn parse_replay(_: &Head<'_>, text: &str, _: &Bytes) -> Result<Op, ProtocolError> {
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
    let bad_from = || {
        ProtocolError::bad_request(
            "field `from` must be \"first\", \"last\", \"new\", {\"seq\":n}, {\"time_ms\":t} or {\"id\":…}",
        )
    };
    let from = match w.from {
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
    };
    if let Some(p) = &w.subject {
        crate::subject::check_pattern(p.as_ref()).map_err(super::topics::bad_subject)?;
    }
    Ok(Op::Stream(Box::new(StreamOp::Replay {
        stream: w.stream.into(),
        subject: w.subject.as_deref().map(Into::into),
        from,
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

pub fn info(info: &Info<'_>) -> Bytes {
    #[derive(Serialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        info: &'a Info<'a>,
    }
    frame::encode_json(&Wire {
        kind: "stream_info",
        info,
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

/// A stored message, replayed.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub replay: u64,
    pub stream: &'a str,
    pub seq: u64,
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
}
