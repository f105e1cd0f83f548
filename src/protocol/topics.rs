//! Protocol 2, feature `topics`: `subscribe`, `unsubscribe`, `publish`,
//! `interest`, `uninterest`, the `will` of `hello`, and the `event` frames the
//! bus builds from a publish.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::span::Text;
use super::{opt_field, opt_str, slice_of, ErrorCode, Head, Op, ProtocolError};
use crate::frame::{self, OutFrame, HEADER_LEN};
use crate::subject::{self, SubjectError};

/// Largest `will` body, in bytes of JSON: a will is held for the session's
/// whole life, outside the memory budget, so it is a short notice.
pub const MAX_WILL_BODY: usize = 64 * 1024;

/// Longest queue-group name, in bytes.
pub const MAX_QUEUE_LEN: usize = 64;

/// What happens to a subscription's events when its subscriber cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Hold the publisher back; cut a subscriber that stalls (as for endpoints).
    #[default]
    Pause,
    /// Skip this subscription and tell it later with a `gap` frame.
    Drop,
    /// Cut the subscriber at once.
    Disconnect,
}

/// `{"type":"subscribe","subject":P,"queue":G,"on_full":…}`
#[derive(Debug)]
pub struct Subscribe {
    pub pattern: Box<str>,
    pub queue: Option<Arc<str>>,
    pub on_full: OnFull,
}

/// `{"type":"publish","subject":S,"body":B,"retain":bool}`. Its fields are
/// read where they sit in the frame.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The frame as the client sent it (what hooks and the monitor see).
    pub frame: Bytes,
    pub retain: bool,
    subject: Text,
    body: Option<Text>,
    id: Text,
    ts: Text,
    traceparent: Option<Text>,
}

impl Publish {
    /// The subject (checked: no wildcards, not reserved).
    pub fn subject(&self) -> &str {
        // Always UTF-8: cut from the frame's text at its quotes, or decoded.
        std::str::from_utf8(self.subject.get(&self.frame)).unwrap_or_default()
    }

    /// The body's JSON text (`None` when absent or `null`).
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_ref().map(|b| b.get(&self.frame))
    }

    /// The body as a slice of the frame, to keep (`null` when absent).
    pub fn body_bytes(&self) -> Bytes {
        match &self.body {
            Some(Text::Sent { start, end }) => self.frame.slice(*start as usize..*end as usize),
            Some(other) => Bytes::copy_from_slice(other.get(&self.frame)),
            None => Bytes::from_static(b"null"),
        }
    }

    /// The publish's `id` as JSON text, the bus's own when absent.
    pub fn id(&self) -> &[u8] {
        self.id.get(&self.frame)
    }

    /// The publish's `ts` as JSON text, the bus's own when absent.
    pub fn ts(&self) -> &[u8] {
        self.ts.get(&self.frame)
    }

    /// The W3C `traceparent` as JSON text, carried into every event.
    pub fn traceparent(&self) -> Option<&[u8]> {
        self.traceparent.as_ref().map(|t| t.get(&self.frame))
    }
}

/// `{"type":"interest","subject":P}`
#[derive(Debug)]
pub struct Interest {
    pub pattern: Box<str>,
}

/// A session's will: published for it when it ends without `bye`.
#[derive(Debug, Clone)]
pub struct Will {
    pub subject: Box<str>,
    pub body: Option<Bytes>,
    pub retain: bool,
}

pub(crate) fn bad_subject(e: SubjectError) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadSubject, e.to_string())
}

fn required_subject<'a>(head: &Head<'a>) -> Result<Cow<'a, str>, ProtocolError> {
    opt_str(head.subject, "subject")?
        .ok_or_else(|| ProtocolError::bad_request("missing field `subject`"))
}

/// A present, non-null JSON body as a slice of the frame.
pub(crate) fn body_of(raw: Option<&RawValue>, text: &str, frame: &Bytes) -> Option<Bytes> {
    raw.filter(|b| b.get() != "null")
        .map(|b| slice_of(frame, text, b))
}

pub(super) fn parse_subscribe(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    let pattern = required_subject(head)?;
    subject::check_pattern(&pattern).map_err(bad_subject)?;
    let queue = opt_str(head.queue, "queue")?;
    if let Some(q) = &queue {
        if q.is_empty()
            || q.len() > MAX_QUEUE_LEN
            || q.contains('.')
            || q.contains(char::is_whitespace)
        {
            return Err(ProtocolError::bad_request(format!(
                "field `queue` must be one token (no dots or spaces) of 1 to {MAX_QUEUE_LEN} bytes"
            )));
        }
    }
    let on_full = match opt_str(head.on_full, "on_full")?.as_deref() {
        None | Some("pause") => OnFull::Pause,
        Some("drop") => OnFull::Drop,
        Some("disconnect") => OnFull::Disconnect,
        Some(other) => {
            return Err(ProtocolError::bad_request(format!(
                "field `on_full` must be \"pause\", \"drop\" or \"disconnect\", not \"{other}\""
            )))
        }
    };
    Ok(Op::Subscribe(Subscribe {
        pattern: pattern.as_ref().into(),
        queue: queue.map(|q| Arc::from(q.as_ref())),
        on_full,
    }))
}

pub(crate) fn required_u64(raw: Option<&RawValue>, field: &str) -> Result<u64, ProtocolError> {
    opt_field::<u64>(raw, field, "a non-negative integer")?
        .ok_or_else(|| ProtocolError::bad_request(format!("missing field `{field}`")))
}

pub(super) fn parse_unsubscribe(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    Ok(Op::Unsubscribe {
        sid: required_u64(head.sid, "sid")?,
    })
}

pub(super) fn parse_uninterest(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    Ok(Op::Uninterest {
        iid: required_u64(head.iid, "iid")?,
    })
}

pub(super) fn parse_interest(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    let pattern = required_subject(head)?;
    subject::check_pattern(&pattern).map_err(bad_subject)?;
    Ok(Op::Interest(Interest {
        pattern: pattern.as_ref().into(),
    }))
}

/// The `id` and `ts` of a publish or request: the client's, else the bus's.
pub(crate) fn id_and_ts(head: &Head<'_>, text: &str, frame: &Bytes) -> (Bytes, Bytes) {
    let id = match head.id {
        Some(raw) => slice_of(frame, text, raw),
        None => Bytes::from(format!("\"{}\"", super::new_id())),
    };
    let ts = match head.ts {
        Some(raw) => slice_of(frame, text, raw),
        None => Bytes::from(format!("{:?}", super::unix_now())),
    };
    (id, ts)
}

pub(super) fn parse_publish(
    head: &Head<'_>,
    text: &str,
    frame: &Bytes,
) -> Result<Op, ProtocolError> {
    let subject = required_subject(head)?;
    subject::check_subject(&subject).map_err(bad_subject)?;
    let retain = opt_field::<bool>(head.retain, "retain", "true or false")?.unwrap_or(false);
    let traceparent = super::check_traceparent(head.traceparent)?;
    Ok(Op::Publish(Box::new(Publish {
        frame: frame.clone(),
        retain,
        subject: match subject {
            Cow::Borrowed(sent) => Text::sent(text, sent),
            Cow::Owned(decoded) => Text::Owned(decoded.into_bytes().into()),
        },
        body: head
            .body
            .filter(|b| b.get() != "null")
            .map(|b| Text::raw(text, b)),
        id: match head.id {
            Some(raw) => Text::raw(text, raw),
            None => Text::made(&super::new_quoted_id()),
        },
        ts: match head.ts {
            Some(raw) => Text::raw(text, raw),
            None => Text::made(super::now_text(&mut [0; 32])),
        },
        traceparent: traceparent.map(|t| Text::raw(text, t)),
    })))
}

pub(super) fn parse_will(raw: &RawValue, text: &str, frame: &Bytes) -> Result<Will, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        subject: Option<&'a RawValue>,
        #[serde(borrow, default)]
        body: Option<&'a RawValue>,
        #[serde(default)]
        retain: bool,
    }
    let wire: Wire = serde_json::from_str(raw.get()).map_err(|_| {
        ProtocolError::bad_request(
            "field `will` must be {\"subject\":S,\"body\":B,\"retain\":bool}",
        )
    })?;
    let subject = opt_str(wire.subject, "will.subject")?
        .ok_or_else(|| ProtocolError::bad_request("missing field `will.subject`"))?;
    subject::check_subject(&subject).map_err(bad_subject)?;
    let body = body_of(wire.body, text, frame);
    if body.as_ref().is_some_and(|b| b.len() > MAX_WILL_BODY) {
        return Err(ProtocolError::bad_request(format!(
            "a `will` body has at most {MAX_WILL_BODY} bytes of JSON: it is a short notice, kept for the session's whole life"
        )));
    }
    Ok(Will {
        subject: subject.as_ref().into(),
        body,
        retain: wire.retain,
    })
}

/// The part of an `event` (or `request`) frame after its `sid`, built once per
/// publish and shared by every recipient:
/// `,"subject":…,"from":…,"id":…,"ts":…[,"traceparent":…],"body":…}`.
#[derive(Debug, Clone)]
pub struct EventTail(pub Bytes);

impl EventTail {
    /// `subject` is left out when `None` (a request addressed to an endpoint).
    pub fn new(
        subject: Option<&str>,
        from: Option<&str>,
        id: &[u8],
        ts: &[u8],
        traceparent: Option<&[u8]>,
        body: Option<&[u8]>,
    ) -> Self {
        let mut out = BytesMut::with_capacity(
            96 + subject.map_or(0, str::len)
                + id.len()
                + ts.len()
                + traceparent.map_or(0, <[u8]>::len)
                + body.map_or(4, <[u8]>::len),
        );
        if let Some(subject) = subject {
            out.put_slice(b",\"subject\":");
            put_json_str(&mut out, subject);
        }
        out.put_slice(b",\"from\":");
        match from {
            Some(from) => put_json_str(&mut out, from),
            None => out.put_slice(b"null"),
        }
        out.put_slice(b",\"id\":");
        out.put_slice(id);
        out.put_slice(b",\"ts\":");
        out.put_slice(ts);
        if let Some(traceparent) = traceparent {
            out.put_slice(b",\"traceparent\":");
            out.put_slice(traceparent);
        }
        out.put_slice(b",\"body\":");
        out.put_slice(body.unwrap_or(b"null"));
        out.put_u8(b'}');
        EventTail(out.freeze())
    }

    /// The whole frame: `head` (e.g. `{"type":"request","sid":3,…`) then the
    /// tail, which is shared, not copied.
    pub fn frame(&self, head: &[u8]) -> OutFrame {
        let len = head.len() + self.0.len();
        let mut out = BytesMut::with_capacity(HEADER_LEN + head.len());
        out.put_u32(len as u32);
        out.put_slice(head);
        OutFrame::Parts(Box::new((out.freeze(), self.0.clone())))
    }

    /// `{"type":"event","sid":N,…}` (with `"retained":true` for a kept value).
    pub fn event(&self, sid: u64, retained: bool) -> OutFrame {
        OutFrame::Event {
            sid,
            retained,
            tail: self.0.clone(),
        }
    }

    /// Length of the payload of [`Self::event`]'s frames, at most.
    pub fn max_event_len(&self) -> usize {
        self.0.len() + frame::MAX_EVENT_HEAD - HEADER_LEN
    }
}

/// Appends `s` as a JSON string.
pub(crate) fn put_json_str(out: &mut BytesMut, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.put_u8(b'"');
        out.put_slice(s.as_bytes());
        out.put_u8(b'"');
    } else {
        // Cannot fail: a string always serialises.
        let _ = serde_json::to_writer((&mut *out).writer(), s);
    }
}

/// `{"type":"gap","sid":N,"missed":n}`
pub fn gap(sid: u64, missed: u64) -> Bytes {
    frame::encode(format!(r#"{{"type":"gap","sid":{sid},"missed":{missed}}}"#).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, Op};
    use serde_json::{json, Value};

    /// The payload of a two-part frame.
    fn joined(f: &OutFrame) -> Vec<u8> {
        let mut all = f.to_vec();
        let len = u32::from_be_bytes([all[0], all[1], all[2], all[3]]) as usize;
        assert_eq!(len, all.len() - HEADER_LEN);
        all.split_off(HEADER_LEN)
    }

    fn op(json: &str) -> Op {
        parse(frame::encode(json.as_bytes())).op
    }

    #[test]
    fn publish_keeps_body_id_and_ts_as_sent() {
        let Op::Publish(p) =
            op(r#"{"type":"publish","subject":"a.b","id":"x","ts":1.5,"body":{"k":[1, 2]}}"#)
        else {
            panic!()
        };
        assert_eq!(p.subject(), "a.b");
        assert_eq!(p.body().unwrap(), br#"{"k":[1, 2]}"#);
        assert_eq!(p.id(), br#""x""#);
        assert_eq!(p.ts(), b"1.5");
        assert!(!p.retain);
        assert!(p.traceparent().is_none());
    }

    #[test]
    fn publish_fields_the_bus_makes_or_decodes() {
        let Op::Publish(p) =
            op(r#"{"type":"publish","subject":"a.\u0062","body":null,"traceparent":"00-x"}"#)
        else {
            panic!()
        };
        assert_eq!(p.subject(), "a.b");
        assert_eq!(p.body(), None);
        assert_eq!(&p.body_bytes()[..], b"null");
        assert_eq!(p.traceparent(), Some(&br#""00-x""#[..]));
        let id: String = serde_json::from_slice(p.id()).unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        let ts: f64 = serde_json::from_slice(p.ts()).unwrap();
        assert!(ts > 1.7e9, "{ts}");
    }

    #[test]
    fn event_frames_are_json_with_the_sid() {
        let tail = EventTail::new(
            Some("a.\"b"),
            Some("ci"),
            br#""i""#,
            b"2.5",
            None,
            Some(b"[1]"),
        );
        let v: Value = serde_json::from_slice(&joined(&tail.event(42, false))).unwrap();
        assert_eq!(
            v,
            json!({"type":"event","sid":42,"subject":"a.\"b","from":"ci","id":"i","ts":2.5,"body":[1]})
        );
        let v: Value = serde_json::from_slice(&joined(&tail.event(u64::MAX, true))).unwrap();
        assert_eq!(v["retained"], json!(true));
        assert_eq!(v["sid"], json!(u64::MAX));
        assert!(joined(&tail.event(u64::MAX, true)).len() <= tail.max_event_len());
    }

    #[test]
    fn bad_subjects_and_fields_are_named() {
        for (text, code) in [
            (
                r#"{"type":"publish","subject":"a.*"}"#,
                ErrorCode::BadSubject,
            ),
            (
                r#"{"type":"publish","subject":"$bus.x"}"#,
                ErrorCode::BadSubject,
            ),
            (r#"{"type":"publish"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"subscribe","subject":"a.>.b"}"#,
                ErrorCode::BadSubject,
            ),
            (
                r#"{"type":"subscribe","subject":"a","queue":"x.y"}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"subscribe","subject":"a","on_full":"explode"}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"type":"unsubscribe","sid":-1}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"hello","will":{"subject":"a"}}"#,
                ErrorCode::NotNegotiated,
            ),
            (
                r#"{"type":"hello","features":["topics"],"will":{"subject":"a.*"}}"#,
                ErrorCode::BadSubject,
            ),
        ] {
            match op(text) {
                Op::Invalid(e) => assert_eq!(e.code, code, "{text}: {e}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn will_is_read_from_hello() {
        let Op::Hello {
            will: Some(will),
            features,
        } = op(
            r#"{"type":"hello","protocol":2,"features":["topics"],"will":{"subject":"a.gone","body":{"x":1},"retain":true}}"#,
        )
        else {
            panic!()
        };
        assert!(features.has(super::super::Feature::Topics));
        assert_eq!(&*will.subject, "a.gone");
        assert_eq!(&will.body.unwrap()[..], br#"{"x":1}"#);
        assert!(will.retain);
    }
}
