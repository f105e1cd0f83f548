//! Protocol 2, feature `monitor`: the `monitor` request and the `monitored`
//! copies of routed frames.

use bytes::{BufMut, Bytes, BytesMut};

use super::envelope::bad_subject;
use super::publish::put_json_str;
use super::{opt_field, opt_str, Head, Op, ProtocolError};
use crate::frame::HEADER_LEN;
use crate::subject;

/// What kind of routed frame a monitor copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorKind {
    Message,
    Publish,
    Request,
    Reply,
    Dropped,
}

impl MonitorKind {
    const ALL: [(MonitorKind, &'static str); 5] = [
        (MonitorKind::Message, "message"),
        (MonitorKind::Publish, "publish"),
        (MonitorKind::Request, "request"),
        (MonitorKind::Reply, "reply"),
        (MonitorKind::Dropped, "dropped"),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL[self as usize].1
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// `{"type":"monitor","subject":P,"kinds":[…]}`: which frames a monitor wants.
#[derive(Debug, Clone, Default)]
pub struct MonitorFilter {
    /// Only frames with a subject matching this pattern.
    pub pattern: Option<Box<str>>,
    /// Bit set of [`MonitorKind`]s; 0 means all.
    kinds: u8,
}

impl MonitorFilter {
    pub fn wants(&self, kind: MonitorKind, subject: Option<&str>) -> bool {
        if self.kinds != 0 && self.kinds & kind.bit() == 0 {
            return false;
        }
        match (&self.pattern, subject) {
            (None, _) => true,
            (Some(p), Some(s)) => subject::matches(p, s),
            (Some(_), None) => false,
        }
    }
}

pub(super) fn parse_monitor(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    let pattern = opt_str(head.subject, "subject")?;
    if let Some(p) = &pattern {
        subject::check_pattern(p).map_err(bad_subject)?;
    }
    let names: Vec<String> =
        opt_field(head.kinds, "kinds", "an array of strings")?.unwrap_or_default();
    let mut kinds = 0;
    for name in names {
        let Some((k, _)) = MonitorKind::ALL.iter().find(|(_, n)| *n == name) else {
            return Err(ProtocolError::bad_request(format!(
                "unknown kind `{name}` in `kinds`; known: message, publish, request, reply, dropped"
            )));
        };
        kinds |= k.bit();
    }
    Ok(Op::Monitor(MonitorFilter {
        pattern: pattern.map(|p| p.as_ref().into()),
        kinds,
    }))
}

/// What the monitor says about one routed frame.
pub struct Seen<'a> {
    pub kind: MonitorKind,
    pub session: &'a str,
    pub from: Option<&'a str>,
    pub subject: Option<&'a str>,
    /// The routed frame's JSON text.
    pub frame: &'a [u8],
    /// For `dropped`: the hook and its reason.
    pub hook: Option<(&'a str, &'a str)>,
}

/// `{"type":"monitored","sid":N,"kind":K,"session":S,"from":F,"subject":…,"frame":{…}}`;
/// `"frame":null,"bytes":n` when wrapping it would pass `max_frame`.
pub fn monitored(sid: u64, seen: &Seen<'_>, max_frame: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + 160 + seen.frame.len());
    out.put_u32(0);
    out.put_slice(
        format!(
            r#"{{"type":"monitored","sid":{sid},"kind":"{}","session":"#,
            seen.kind.name()
        )
        .as_bytes(),
    );
    put_json_str(&mut out, seen.session);
    out.put_slice(b",\"from\":");
    match seen.from {
        Some(f) => put_json_str(&mut out, f),
        None => out.put_slice(b"null"),
    }
    if let Some(subject) = seen.subject {
        out.put_slice(b",\"subject\":");
        put_json_str(&mut out, subject);
    }
    if let Some((hook, reason)) = seen.hook {
        out.put_slice(b",\"hook\":");
        put_json_str(&mut out, hook);
        out.put_slice(b",\"reason\":");
        put_json_str(&mut out, reason);
    }
    if out.len() - HEADER_LEN + seen.frame.len() + 12 <= max_frame {
        out.put_slice(b",\"frame\":");
        out.put_slice(seen.frame);
    } else {
        out.put_slice(format!(r#","frame":null,"bytes":{}"#, seen.frame.len()).as_bytes());
    }
    out.put_u8(b'}');
    let len = (out.len() - HEADER_LEN) as u32;
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use serde_json::{json, Value};

    #[test]
    fn filter_by_kind_and_subject() {
        let Op::Monitor(f) = crate::protocol::parse(frame::encode(
            br#"{"type":"monitor","subject":"a.>","kinds":["publish"]}"#,
        ))
        .op
        else {
            panic!()
        };
        assert!(f.wants(MonitorKind::Publish, Some("a.b")));
        assert!(!f.wants(MonitorKind::Publish, Some("b.b")));
        assert!(!f.wants(MonitorKind::Request, Some("a.b")));
        assert!(!f.wants(MonitorKind::Publish, None));
        assert!(MonitorFilter::default().wants(MonitorKind::Message, None));
    }

    #[test]
    fn a_frame_too_large_to_wrap_is_reported_by_size() {
        let seen = Seen {
            kind: MonitorKind::Message,
            session: "s",
            from: Some("a"),
            subject: None,
            frame: br#"{"type":"message","body":"xxxxxxxx"}"#,
            hook: None,
        };
        let v: Value = serde_json::from_slice(frame::payload(&monitored(1, &seen, 4096))).unwrap();
        assert_eq!(v["frame"]["body"], json!("xxxxxxxx"));
        let small = monitored(1, &seen, 100);
        assert!(frame::payload(&small).len() <= 100);
        let v: Value = serde_json::from_slice(frame::payload(&small)).unwrap();
        assert_eq!(v["frame"], Value::Null);
        assert_eq!(v["bytes"], json!(seen.frame.len()));
    }
}
