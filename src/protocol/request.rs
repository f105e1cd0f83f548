//! `request` (rpc): to a subject's responders or to an endpoint, with a timeout
//! and an optional gather; the `response`, `gathered` and error frames the
//! requester gets, and the heads of the frames its responders get.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use super::envelope::{bad_subject, body_of, id_and_ts, opt_field, opt_str, traceparent, Head};
use super::publish::put_json_str;
use super::{ErrorCode, Op, ProtocolError, Rid};
use crate::frame::HEADER_LEN;
use crate::subject;

/// Timeout of a request that names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest timeout a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Most responses one request may gather.
pub const MAX_GATHER: usize = 1024;

/// Who a request is for.
#[derive(Debug, Clone)]
pub enum Target {
    /// Subscriptions matching a subject (of sessions with `rpc`).
    Subject(Box<str>),
    /// One endpoint.
    To(Box<str>),
}

/// Collect several responses.
#[derive(Debug, Clone, Copy)]
pub struct Gather {
    pub max: usize,
    pub window: Duration,
}

/// `{"type":"request","rid":R,"subject":S | "to":E,"body":B,"timeout_ms":T,"gather":…}`
#[derive(Debug, Clone)]
pub struct Ask {
    pub target: Target,
    pub body: Option<Bytes>,
    pub id: Bytes,
    pub ts: Bytes,
    pub timeout: Duration,
    pub gather: Option<Gather>,
    /// The W3C `traceparent` as JSON text, carried to every responder.
    pub traceparent: Option<Bytes>,
    /// The frame as the client sent it (what hooks and the monitor see).
    pub frame: Bytes,
}

pub(crate) fn parse_request(
    head: &Head<'_>,
    text: &str,
    frame: &Bytes,
) -> Result<Op, ProtocolError> {
    if head.rid.is_none_or(|r| r.get() == "null") {
        return Err(ProtocolError::bad_request(
            "a `request` needs a `rid`: its response carries the same one",
        ));
    }
    let subject = opt_str(head.subject, "subject")?;
    let to = opt_str(head.to, "to")?.filter(|t| !t.is_empty());
    let target = match (subject, to) {
        (Some(s), None) => {
            subject::check_subject(&s).map_err(bad_subject)?;
            Target::Subject(s.as_ref().into())
        }
        (None, Some(to)) => Target::To(to.as_ref().into()),
        _ => {
            return Err(ProtocolError::bad_request(
                "a `request` names either a `subject` or a `to` endpoint",
            ))
        }
    };
    let timeout = match opt_field::<u64>(head.timeout_ms, "timeout_ms", "a non-negative integer")? {
        None => DEFAULT_TIMEOUT,
        Some(ms) if ms == 0 || Duration::from_millis(ms) > MAX_TIMEOUT => {
            return Err(ProtocolError::bad_request(format!(
                "field `timeout_ms` must be 1 to {}",
                MAX_TIMEOUT.as_millis()
            )))
        }
        Some(ms) => Duration::from_millis(ms),
    };
    #[derive(Deserialize)]
    struct GatherWire {
        max: usize,
        window_ms: Option<u64>,
    }
    let gather = opt_field::<GatherWire>(head.gather, "gather", "{\"max\":n,\"window_ms\":ms}")?
        .map(|g| {
            if g.max == 0 || g.max > MAX_GATHER {
                return Err(ProtocolError::bad_request(format!(
                    "field `gather.max` must be 1 to {MAX_GATHER}"
                )));
            }
            let window = g
                .window_ms
                .map_or(timeout, Duration::from_millis)
                .min(timeout);
            Ok(Gather { max: g.max, window })
        })
        .transpose()?;
    let (id, ts) = id_and_ts(head, text, frame);
    Ok(Op::Ask(Box::new(Ask {
        target,
        body: body_of(head.body, text, frame),
        id,
        ts,
        timeout,
        gather,
        traceparent: traceparent(head.traceparent, text, frame)?,
        frame: frame.clone(),
    })))
}

fn finish(mut out: BytesMut) -> Bytes {
    let len = (out.len() - HEADER_LEN) as u32;
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// `{"type":"response","rid":R,"from":F,"session":S[,"traceparent":T],"body":B}`
pub fn response(
    rid: &Rid,
    from: Option<&str>,
    session: &str,
    traceparent: Option<&[u8]>,
    body: Option<&[u8]>,
) -> Bytes {
    let body = body.unwrap_or(b"null");
    let traceparent_len = traceparent.map_or(0, <[u8]>::len);
    let mut out =
        BytesMut::with_capacity(HEADER_LEN + 112 + rid.0.len() + traceparent_len + body.len());
    out.put_u32(0);
    out.put_slice(b"{\"type\":\"response\",\"rid\":");
    out.put_slice(rid.0.as_bytes());
    out.put_slice(b",\"from\":");
    match from {
        Some(f) => put_json_str(&mut out, f),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b",\"session\":");
    put_json_str(&mut out, session);
    if let Some(traceparent) = traceparent {
        out.put_slice(b",\"traceparent\":");
        out.put_slice(traceparent);
    }
    out.put_slice(b",\"body\":");
    out.put_slice(body);
    out.put_u8(b'}');
    finish(out)
}

/// `{"type":"gathered","rid":R,"count":n}`
pub fn gathered(rid: &Rid, count: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + 48 + rid.0.len());
    out.put_u32(0);
    out.put_slice(b"{\"type\":\"gathered\",\"rid\":");
    out.put_slice(rid.0.as_bytes());
    out.put_slice(format!(",\"count\":{count}}}").as_bytes());
    finish(out)
}

/// The head of a `request` frame for a responder with `rpc` (before the shared
/// tail): `{"type":"request","sid":N,"reply_to":A` (no `sid` when sent by `to`).
pub fn request_head(sid: Option<u64>, reply_to: &str) -> Vec<u8> {
    match sid {
        Some(sid) => format!(r#"{{"type":"request","sid":{sid},"reply_to":"{reply_to}""#),
        None => format!(r#"{{"type":"request","reply_to":"{reply_to}""#),
    }
    .into_bytes()
}

/// The head of the `message` a hermes endpoint gets for a request:
/// `{"type":"message","to":E,"reply_to":A`.
pub fn message_head(to: &str, reply_to: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_slice(b"{\"type\":\"message\",\"to\":");
    put_json_str(&mut out, to);
    out.put_slice(format!(r#","reply_to":"{reply_to}""#).as_bytes());
    out.to_vec()
}

/// The error a request is answered with, `rid` set.
pub fn error(code: ErrorCode, detail: impl Into<String>, rid: &Rid) -> Bytes {
    ProtocolError::new(code, detail)
        .answering(Some(rid.clone()))
        .to_frame()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use crate::protocol::op_of as op;
    use crate::protocol::{Op, Target};
    use serde_json::{json, Value};

    #[test]
    fn request_fields() {
        let Op::Ask(a) = op(
            r#"{"type":"request","rid":7,"subject":"img.resize","body":{"w":64},"timeout_ms":250,"gather":{"max":3}}"#,
        ) else {
            panic!()
        };
        assert!(matches!(a.target, Target::Subject(ref s) if &**s == "img.resize"));
        assert_eq!(a.timeout, Duration::from_millis(250));
        let g = a.gather.unwrap();
        assert_eq!((g.max, g.window), (3, Duration::from_millis(250)));
        for (text, what) in [
            (r#"{"type":"request","subject":"a"}"#, "rid"),
            (r#"{"type":"request","rid":1}"#, "either"),
            (
                r#"{"type":"request","rid":1,"subject":"a","to":"b"}"#,
                "either",
            ),
            (
                r#"{"type":"request","rid":1,"subject":"a","timeout_ms":300001}"#,
                "timeout_ms",
            ),
            (
                r#"{"type":"request","rid":1,"subject":"a","gather":{"max":0}}"#,
                "gather",
            ),
            (r#"{"type":"request","rid":[1],"subject":"a"}"#, "rid"),
        ] {
            match op(text) {
                Op::Invalid(e) => assert!(e.detail.contains(what), "{text}: {e}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn answer_frames_are_json() {
        let rid = Rid("\"r\\\"1\"".into());
        let v: Value = serde_json::from_slice(frame::payload(&response(
            &rid,
            Some("a\"b"),
            "s",
            None,
            Some(b"{}"),
        )))
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"response","rid":"r\"1","from":"a\"b","session":"s","body":{}})
        );
        let v: Value = serde_json::from_slice(frame::payload(&response(
            &rid,
            None,
            "s",
            Some(br#""00-ab-cd-01""#),
            None,
        )))
        .unwrap();
        assert_eq!(v["traceparent"], "00-ab-cd-01");
        assert_eq!(v["body"], Value::Null);
        let v: Value = serde_json::from_slice(frame::payload(&gathered(&rid, 3))).unwrap();
        assert_eq!(v, json!({"type":"gathered","rid":"r\"1","count":3}));
        let v: Value = serde_json::from_slice(frame::payload(&error(
            ErrorCode::NoResponders,
            "none",
            &rid,
        )))
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"no_responders","detail":"none","rid":"r\"1"})
        );
    }
}
