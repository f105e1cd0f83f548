//! `publish` (topics), and the `event` frames the bus builds from it: one tail
//! per publish, shared by every recipient.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::envelope::{bad_subject, check_traceparent, opt_field, required_subject, Head};
use super::span::Text;
use super::{Op, ProtocolError};
use crate::frame::{self, OutFrame, HEADER_LEN};
use crate::subject;

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

pub(crate) fn parse_publish(
    head: &Head<'_>,
    text: &str,
    frame: &Bytes,
) -> Result<Op, ProtocolError> {
    let subject = required_subject(head)?;
    subject::check_subject(&subject).map_err(bad_subject)?;
    let retain = opt_field::<bool>(head.retain, "retain", "true or false")?.unwrap_or(false);
    let traceparent = check_traceparent(head.traceparent)?;
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
            None => Text::made(&super::message::new_quoted_id()),
        },
        ts: match head.ts {
            Some(raw) => Text::raw(text, raw),
            None => Text::made(super::message::now_text(&mut [0; 32])),
        },
        traceparent: traceparent.map(|t| Text::raw(text, t)),
    })))
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
        // Sized exactly, so the buffer becomes the tail without a second
        // allocation (and an event for one subscriber takes it without a copy).
        let len = subject.map_or(0, |s| b",\"subject\":".len() + json_str_len(s))
            + b",\"from\":".len()
            + from.map_or(4, json_str_len)
            + b",\"id\":".len()
            + id.len()
            + b",\"ts\":".len()
            + ts.len()
            + traceparent.map_or(0, |t| b",\"traceparent\":".len() + t.len())
            + b",\"body\":".len()
            + body.map_or(4, <[u8]>::len)
            + 1;
        let mut out = Vec::with_capacity(len);
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
        debug_assert_eq!(out.len(), len);
        EventTail(Bytes::from(out))
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
        self.clone().into_event(sid, retained)
    }

    /// [`Self::event`], for the last recipient.
    pub fn into_event(self, sid: u64, retained: bool) -> OutFrame {
        OutFrame::Event {
            sid,
            retained,
            tail: self.0,
        }
    }

    /// Length of the payload of [`Self::event`]'s frames, at most.
    pub fn max_event_len(&self) -> usize {
        self.0.len() + frame::MAX_EVENT_HEAD - HEADER_LEN
    }
}

/// Appends `s` as a JSON string.
pub(crate) fn put_json_str(out: &mut impl BufMut, s: &str) {
    if is_plain(s) {
        out.put_u8(b'"');
        out.put_slice(s.as_bytes());
        out.put_u8(b'"');
    } else {
        // Cannot fail: a string always serialises.
        let _ = serde_json::to_writer(out.writer(), s);
    }
}

/// Length of `s` as a JSON string, as [`put_json_str`] writes it.
fn json_str_len(s: &str) -> usize {
    if is_plain(s) {
        s.len() + 2
    } else {
        serde_json::to_string(s).map_or(0, |j| j.len())
    }
}

/// Whether `s` needs no escape in JSON.
fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::op_of as op;
    use serde_json::{json, Value};

    /// The payload of a two-part frame.
    fn joined(f: &OutFrame) -> Vec<u8> {
        let mut all = f.to_vec();
        let len = u32::from_be_bytes([all[0], all[1], all[2], all[3]]) as usize;
        assert_eq!(len, all.len() - HEADER_LEN);
        all.split_off(HEADER_LEN)
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
    fn an_event_tail_is_sized_exactly_whatever_its_strings_hold() {
        for (subject, from) in [
            (Some("a.b"), Some("ci")),
            (Some("a.\"b\\c"), None),
            (None, Some("é\u{1}\t\u{2028}")),
        ] {
            for traceparent in [None, Some(&br#""00-x""#[..])] {
                for body in [None, Some(&b"[1]"[..])] {
                    let tail = EventTail::new(subject, from, br#""i""#, b"1", traceparent, body);
                    let text = format!("{{\"sid\":1{}", std::str::from_utf8(&tail.0).unwrap());
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v["subject"].as_str(), subject);
                    assert_eq!(v["from"].as_str(), from);
                }
            }
        }
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
}
