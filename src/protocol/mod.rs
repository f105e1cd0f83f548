//! The wire protocol: what a frame's JSON means (see `docs/PROTOCOL.md`).
//!
//! Parsing happens on the connection's reader task, so the router only sees
//! validated [`Request`]s. A routed message is kept as its original frame bytes
//! (with `id`/`ts` spliced in when absent) and is never re-serialised.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use crate::frame::{self, HEADER_LEN};

// The request types, a module each (or one per family of the durable store's
// requests), in the order of [`TYPES`].
pub mod hello;
pub mod interest;
pub mod jobs;
pub mod kv;
pub mod message;
pub mod monitor;
pub mod publish;
pub mod register;
pub mod reply;
pub mod request;
pub mod streams;
pub mod subscribe;

mod envelope;
mod error;
mod span;

pub(crate) use envelope::{opt_field, opt_str, portable};
use envelope::{read, Common, Extra, Head};
pub use error::{ErrorCode, ProtocolError};
pub use hello::{welcome, Will};
pub use interest::Interest;
pub use kv::KvOp;
pub use message::{ack, ack_dropped, new_id, unix_now, Dropped, MsgId, Routed};
pub use monitor::{MonitorFilter, MonitorKind};
pub use publish::{EventTail, Publish};
pub use register::registered;
pub use reply::Reply;
pub use request::{Ask, Target};
pub use subscribe::{OnFull, Subscribe};

/// Version of the hookbus extensions negotiated with `hello`. hermes-bus 0.7
/// clients never send `hello` and get plain hermes behaviour.
pub const PROTOCOL_VERSION: u32 = 2;

/// Deepest nesting of JSON arrays and objects accepted in a frame. Deeper frames
/// are refused (`bad_frame`): Python's `json.loads`, which hermes clients use,
/// fails on nesting not much deeper, so the bus must not forward it.
pub const MAX_JSON_DEPTH: usize = 128;

/// Longest `rid`, in bytes of JSON text.
pub const MAX_RID_LEN: usize = 128;

/// An optional behaviour a client asks for in `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Registered senders also get `endpoint_not_found` errors (hermes sends them
    /// only to anonymous senders).
    Errors,
    /// Every routed message is answered with `{"type":"ack","id":…,"delivered":n}`.
    Acks,
    /// Subjects: subscribe, publish, interest, will (protocol 2).
    Topics,
    /// Request/reply (protocol 2).
    Rpc,
    /// A copy of every routed frame (protocol 2).
    Monitor,
    /// The durable key-value store.
    Kv,
    /// Durable jobs with leases.
    Jobs,
    /// Publishes kept in declared streams, and replay.
    Streams,
}

impl Feature {
    /// Every feature, in the order `welcome` lists them, with its name.
    pub const ALL: [(Feature, &'static str); 8] = [
        (Feature::Errors, "errors"),
        (Feature::Acks, "acks"),
        (Feature::Topics, "topics"),
        (Feature::Rpc, "rpc"),
        (Feature::Monitor, "monitor"),
        (Feature::Kv, "kv"),
        (Feature::Jobs, "jobs"),
        (Feature::Streams, "streams"),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("", |(_, n)| n)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of features a session negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features(u8);

impl Features {
    pub fn has(self, f: Feature) -> bool {
        self.0 & f.bit() != 0
    }

    pub fn with(mut self, f: Feature) -> Self {
        self.0 |= f.bit();
        self
    }

    pub fn errors(self) -> bool {
        self.has(Feature::Errors)
    }

    pub fn acks(self) -> bool {
        self.has(Feature::Acks)
    }

    fn names(self) -> Vec<&'static str> {
        Feature::ALL
            .iter()
            .filter(|(f, _)| self.has(*f))
            .map(|(_, n)| *n)
            .collect()
    }
}

/// A request's `rid`: its raw JSON text (a number or a string), echoed in answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rid(pub Box<str>);

impl Rid {
    /// The rid as a JSON value (for answers built with `serde_json`).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

/// One parsed client frame: what it asks for, and the `rid` its answers carry.
#[derive(Debug)]
pub struct Request {
    pub rid: Option<Rid>,
    pub op: Op,
}

impl From<Op> for Request {
    fn from(op: Op) -> Self {
        Request { rid: None, op }
    }
}

/// What a client frame asks for.
#[derive(Debug)]
pub enum Op {
    /// `{"type":"register","endpoint":N}`
    Register { endpoint: String },
    /// `{"type":"ping"}`
    Ping,
    /// `{"type":"message",…}`: forwarded as `frame`, every field kept.
    Message(Routed),
    /// `{"type":"list_endpoints"}`
    ListEndpoints,
    /// `{"type":"hello","protocol":2,"features":[…],"will":…}` (hookbus extension)
    Hello {
        features: Features,
        will: Option<Box<Will>>,
    },
    /// `{"type":"status"}` (hookbus extension)
    Status,
    /// `{"type":"hooks_status"}` (hookbus extension)
    HooksStatus,
    /// `{"type":"bye"}`: the session ends on purpose (its will is not published).
    Bye,
    /// `{"type":"subscribe",…}` (topics)
    Subscribe(Subscribe),
    /// `{"type":"unsubscribe","sid":n}` (topics)
    Unsubscribe { sid: u64 },
    /// `{"type":"publish",…}` (topics)
    Publish(Box<Publish>),
    /// `{"type":"interest","subject":P}` (topics)
    Interest(Interest),
    /// `{"type":"uninterest","iid":n}` (topics)
    Uninterest { iid: u64 },
    /// `{"type":"request",…}` (rpc)
    Ask(Box<Ask>),
    /// `{"type":"reply",…}` (rpc), or a `message` to a `$reply.` address.
    Reply(Box<Reply>),
    /// `{"type":"monitor",…}` (monitor)
    Monitor(MonitorFilter),
    /// `kv_put`, `kv_get`, `kv_delete`, `kv_keys`, `kv_watch`, `kv_unwatch` (kv)
    Kv(Box<KvOp>),
    /// `job_publish`, `job_claim`, … (jobs)
    Job(Box<jobs::Job>),
    /// `replay`, `stream_info`, `stream_list`, `consume`, `stream_ack`,
    /// `unconsume`, `consumer_delete` (streams)
    Stream(Box<streams::StreamOp>),

    /// A message, publish or request a filter hook dropped: never routed; its
    /// sender is told when it asked for answers.
    Dropped(Box<Dropped>),

    /// A frame that could not be accepted; answered with this error.
    Invalid(Box<ProtocolError>),
}

impl Op {
    /// The feature a session must have negotiated to send this.
    pub fn feature(&self) -> Option<Feature> {
        match self {
            Op::Subscribe(_)
            | Op::Unsubscribe { .. }
            | Op::Publish(_)
            | Op::Interest(_)
            | Op::Uninterest { .. } => Some(Feature::Topics),
            Op::Ask(_) => Some(Feature::Rpc),
            // A hermes client answers with a `message` to `reply_to`.
            Op::Reply(r) if !r.via_message => Some(Feature::Rpc),
            Op::Monitor(_) => Some(Feature::Monitor),
            Op::Kv(_) => Some(Feature::Kv),
            Op::Job(_) => Some(Feature::Jobs),
            Op::Stream(_) => Some(Feature::Streams),
            _ => None,
        }
    }

    /// The frame filter hooks see and may drop or rewrite, if this passes them.
    pub fn filtered_frame(&self) -> Option<(&Bytes, u8)> {
        match self {
            Op::Message(m) => Some((&m.frame, m.hops)),
            Op::Publish(p) => Some((&p.frame, 0)),
            Op::Ask(a) => Some((&a.frame, 0)),
            Op::Job(j) if j.op.goal().is_some() => Some((&j.frame, 0)),
            _ => None,
        }
    }
}

/// Parses one frame (header included) into a request. Never fails: a bad frame
/// becomes [`Request::Invalid`] so the connection can answer it and carry on.
pub fn parse(frame: Bytes) -> Request {
    let mut rid = None;
    let op = parse_inner(frame, &mut rid)
        .unwrap_or_else(|e| Op::Invalid(Box::new(e.answering(rid.clone()))));
    Request { rid, op }
}

/// [`parse`], then refuses a message that the `id` and `ts` the bus adds would
/// take over `max_frame` bytes: nothing is ever delivered over the limit the bus
/// advertises. The connection stays open (the frame itself was read whole).
pub fn parse_within(frame: Bytes, max_frame: usize) -> Request {
    let Request { rid, op } = parse(frame);
    let op = match op {
        Op::Message(msg) if frame::payload(&msg.frame).len() > max_frame => {
            let mut error = ProtocolError::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "with the `id` and `ts` the bus adds, the message is {} bytes, over the {max_frame}-byte limit; send `id` and `ts` yourself or make it smaller",
                    frame::payload(&msg.frame).len()
                ),
            );
            error.id = Some(msg.id());
            Op::Invalid(Box::new(error.answering(rid.clone())))
        }
        other => other,
    };
    Request { rid, op }
}

/// Whether `text` nests arrays and objects deeper than `max` (outside strings).
fn too_deep(text: &str, max: usize) -> bool {
    // Deeper than `max` needs more than `max` openers and as many closers: short
    // frames (most) cannot be, and a count of `{` and `[` settles almost every other
    // frame without the byte-by-byte walk.
    if text.len() <= 2 * max || memchr::memchr2_iter(b'{', b'[', text.as_bytes()).count() <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Reads one request type's fields from the envelope: one entry of [`TYPES`].
type ParseFn = fn(&Head<'_>, &str, &Bytes) -> Result<Op, ProtocolError>;

/// Every request type: its name, whether its parser reads the protocol-2
/// fields ([`Extra`]), and its parser (the feature that gates it is
/// [`Op::feature`]). A new frame is one module and one line here.
const TYPES: &[(&str, bool, ParseFn)] = &[
    ("message", false, message::parse_message),
    ("register", false, register::parse_register),
    ("ping", false, |_, _, _| Ok(Op::Ping)),
    ("list_endpoints", false, |_, _, _| Ok(Op::ListEndpoints)),
    ("hello", true, hello::parse_hello),
    ("status", false, |_, _, _| Ok(Op::Status)),
    ("hooks_status", false, |_, _, _| Ok(Op::HooksStatus)),
    ("bye", false, |_, _, _| Ok(Op::Bye)),
    ("subscribe", true, subscribe::parse_subscribe),
    ("unsubscribe", true, subscribe::parse_unsubscribe),
    ("publish", true, publish::parse_publish),
    ("interest", true, interest::parse_interest),
    ("uninterest", true, interest::parse_uninterest),
    ("request", true, request::parse_request),
    ("reply", true, reply::parse_reply),
    ("monitor", true, monitor::parse_monitor),
    ("kv_put", true, kv::parse_put),
    ("kv_get", true, kv::parse_get),
    ("kv_delete", true, kv::parse_delete),
    ("kv_keys", true, kv::parse_keys),
    ("kv_watch", true, kv::parse_watch),
    ("kv_unwatch", true, kv::parse_unwatch),
    ("job_publish", false, jobs::parse_publish),
    ("job_claim", false, jobs::parse_claim),
    ("job_extend", false, jobs::parse_extend),
    ("job_fulfill", false, jobs::parse_fulfill),
    ("job_fail", false, jobs::parse_fail),
    ("job_status", false, jobs::parse_status),
    ("job_list", false, jobs::parse_list),
    ("job_retry", false, jobs::parse_retry),
    ("job_cancel", false, jobs::parse_cancel),
    ("replay", false, streams::parse_replay),
    ("stream_info", false, streams::parse_info),
    ("stream_list", false, streams::parse_list),
    ("consume", false, streams::parse_consume),
    ("stream_ack", false, streams::parse_ack),
    ("unconsume", false, streams::parse_unconsume),
    ("consumer_delete", false, streams::parse_consumer_delete),
];

fn parse_inner(frame: Bytes, rid_out: &mut Option<Rid>) -> Result<Op, ProtocolError> {
    let payload = frame::payload(&frame);
    let text = std::str::from_utf8(payload).map_err(|e| {
        ProtocolError::new(
            ErrorCode::BadFrame,
            format!("payload is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(ProtocolError::new(
            ErrorCode::BadFrame,
            "payload must be a JSON object",
        ));
    }
    if too_deep(text, MAX_JSON_DEPTH) {
        return Err(ProtocolError::new(
            ErrorCode::BadFrame,
            format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    // Every client this bus knows writes `type` first: a protocol-2 frame is
    // then read in one pass; anything else is read for the common fields, then
    // for the protocol-2 ones only if its type has them.
    let (head, parse) = match sniff_type(text).and_then(find_type) {
        Some((_, true, parse)) => (read::<Head>(text)?, parse),
        _ => {
            let common: Common = read(text)?;
            check_rid(common.rid, rid_out)?;
            let (_, extra, parse) =
                find_type(&type_of(common.kind)?).ok_or_else(|| unknown_type(common.kind))?;
            let extra = if *extra {
                read(text)?
            } else {
                Extra::default()
            };
            (Head::new(common, extra), parse)
        }
    };
    check_rid(head.rid, rid_out)?;
    match parse(&head, text, &frame)? {
        Op::Message(mut msg) if msg.frame.is_empty() => {
            msg.frame = frame;
            Ok(Op::Message(msg))
        }
        op => Ok(op),
    }
}

/// The entry of [`TYPES`] named `kind`.
fn find_type(kind: &str) -> Option<&'static (&'static str, bool, ParseFn)> {
    TYPES.iter().find(|(name, _, _)| *name == kind)
}

/// The value of a frame's `type` field, which must be a string.
fn type_of(kind: Option<&RawValue>) -> Result<Cow<'_, str>, ProtocolError> {
    opt_str(kind, "type")?.ok_or_else(|| ProtocolError::bad_request("missing field `type`"))
}

fn unknown_type(kind: Option<&RawValue>) -> ProtocolError {
    let kind = type_of(kind).unwrap_or_default();
    let known: Vec<&str> = TYPES.iter().map(|(n, _, _)| *n).collect();
    ProtocolError::new(
        ErrorCode::UnknownType,
        format!("unknown message type `{kind}`; known: {}", known.join(", ")),
    )
}

/// Keeps a valid `rid` for the answer; refuses any other.
fn check_rid(raw: Option<&RawValue>, rid_out: &mut Option<Rid>) -> Result<(), ProtocolError> {
    if let Some(raw) = raw.filter(|r| r.get() != "null") {
        let ok = raw.get().len() <= MAX_RID_LEN
            && (raw.get().starts_with('"') || raw.get().parse::<f64>().is_ok());
        if !ok {
            return Err(ProtocolError::bad_request(format!(
                "field `rid` must be a number or a string of at most {MAX_RID_LEN} bytes"
            )));
        }
        *rid_out = Some(Rid(raw.get().into()));
    }
    Ok(())
}

/// The type of a frame whose first field is `"type"`, a plain string (no
/// escapes), as clients write it; `None` for any other frame.
fn sniff_type(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"type\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let name = &rest[..rest.find('"')?];
    (!name.contains('\\')).then_some(name)
}

/// `{"type":"pong"}`
pub fn pong() -> Bytes {
    frame::encode(br#"{"type":"pong"}"#)
}

/// `frame`, an answer the bus built (so it starts with `{` and has a member), with
/// `"rid":…` put first when the request carried one.
pub fn with_rid(frame: Bytes, rid: Option<&Rid>) -> Bytes {
    let Some(rid) = rid else {
        return frame;
    };
    let payload = frame::payload(&frame);
    let mut out = BytesMut::with_capacity(frame.len() + rid.0.len() + 8);
    out.put_u32(0);
    out.put_slice(b"{\"rid\":");
    out.put_slice(rid.0.as_bytes());
    out.put_u8(b',');
    out.put_slice(&payload[1..]);
    let len = (out.len() - HEADER_LEN) as u32;
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// What a frame of `json` asks for (for the request types' tests).
#[cfg(test)]
fn op_of(json: &str) -> Op {
    parse(frame::encode(json.as_bytes())).op
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::op_of as req;

    fn invalid(json: &[u8]) -> ProtocolError {
        match parse(frame::encode(json)).op {
            Op::Invalid(e) => *e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn body(frame: &Bytes) -> Value {
        serde_json::from_slice(frame::payload(frame)).unwrap()
    }

    #[test]
    fn a_leading_type_is_sniffed_however_it_is_spaced() {
        assert_eq!(
            sniff_type(r#"{"type":"publish","subject":"a"}"#),
            Some("publish")
        );
        assert_eq!(
            sniff_type(r#" { "type" : "publish", "subject": "a"}"#),
            Some("publish")
        );
        assert_eq!(sniff_type(r#"{"subject":"a","type":"publish"}"#), None);
        assert_eq!(sniff_type(r#"{"type":"pub\u006cish"}"#), None);
        assert_eq!(sniff_type(r#"{"type":3}"#), None);
    }

    #[test]
    fn a_frame_read_in_one_pass_is_read_as_in_two() {
        // Sniffed (one pass) and not (type last: two passes) give the same request.
        for json in [
            r#"{"type":"publish","subject":"a.b","body":{"x":1},"retain":true}"#,
            r#"{"subject":"a.b","body":{"x":1},"retain":true,"type":"publish"}"#,
        ] {
            match req(json) {
                Op::Publish(p) => {
                    assert_eq!(p.subject(), "a.b");
                    assert!(p.retain);
                    assert_eq!(p.body(), Some(&br#"{"x":1}"#[..]));
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        // A second `type` is refused either way, never read past.
        for json in [
            r#"{"type":"publish","subject":"a","type":"subscribe"}"#,
            r#"{"subject":"a","type":"publish","type":"subscribe"}"#,
        ] {
            let e = invalid(json.as_bytes());
            assert!(
                e.detail.contains("duplicate field `type`"),
                "{json}: {}",
                e.detail
            );
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_and_strings_do_not_count() {
        let nested = |n: usize| {
            format!(
                r#"{{"type":"message","to":"a","body":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        // The object itself is one level.
        assert!(matches!(req(&nested(MAX_JSON_DEPTH - 1)), Op::Message(_)));
        let e = invalid(nested(MAX_JSON_DEPTH).as_bytes());
        assert_eq!(e.code, ErrorCode::BadFrame, "{e}");
        assert!(e.detail.contains("nested"), "{e}");
        let e = invalid(nested(100_000).as_bytes());
        assert_eq!(e.code, ErrorCode::BadFrame);
        let brackets = format!(
            r#"{{"type":"message","to":"a","body":"{}\"{}"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(matches!(req(&brackets), Op::Message(_)));
    }

    #[test]
    fn a_message_the_id_and_ts_would_take_over_the_limit_is_refused() {
        let text = r#"{"type":"message","to":"a","body":"xxxxxxxxxx"}"#;
        let exact = text.len();
        match parse_within(frame::encode(text.as_bytes()), exact).op {
            Op::Invalid(e) => {
                assert_eq!(e.code, ErrorCode::FrameTooLarge);
                assert!(e.id.is_some());
            }
            other => panic!("{other:?}"),
        }
        let with_both = r#"{"type":"message","id":"1","ts":1.0,"to":"a"}"#;
        assert!(matches!(
            parse_within(frame::encode(with_both.as_bytes()), with_both.len()).op,
            Op::Message(_)
        ));
    }

    #[test]
    fn message_keeps_every_field_and_fills_id_and_ts() {
        let Op::Message(m) = req(r#" {"type":"message","to":"b","body":{"x":[1,2]},"extra":true}"#)
        else {
            panic!()
        };
        assert_eq!(m.to.as_deref(), Some("b"));
        let v = body(&m.frame);
        assert_eq!(v["body"], json!({"x": [1, 2]}));
        assert_eq!(v["extra"], json!(true));
        assert!(uuid::Uuid::parse_str(v["id"].as_str().unwrap()).is_ok());
        assert!(v["ts"].as_f64().unwrap() > 1.7e9);
    }

    #[test]
    fn message_with_id_and_ts_is_forwarded_byte_for_byte() {
        let text = r#"{"type":"message","to":"b","id":"x","ts":1.5}"#;
        let Op::Message(m) = req(text) else { panic!() };
        assert_eq!(frame::payload(&m.frame), text.as_bytes());
        assert_eq!(m.id(), MsgId::new(br#""x""#));
    }

    #[test]
    fn acks_and_errors_echo_the_id_as_written() {
        for id in [
            r#""x""#,
            "1e999",
            r#""\ud800""#,
            "123456789012345678901234567890",
            "-0",
            "null",
        ] {
            let Op::Message(m) = req(&format!(r#"{{"type":"message","to":"b","id":{id}}}"#)) else {
                panic!()
            };
            let ack = ack(&m.id(), 1);
            let text = std::str::from_utf8(frame::payload(&ack)).unwrap();
            assert_eq!(
                text,
                format!(r#"{{"type":"ack","id":{id},"delivered":1}}"#),
                "{id}"
            );
            let mut e = ProtocolError::new(ErrorCode::FrameTooLarge, "too large");
            e.id = Some(m.id());
            let error = e.to_frame();
            let text = std::str::from_utf8(frame::payload(&error)).unwrap();
            assert!(text.contains(&format!(r#""id":{id}"#)), "{text}");
        }
    }

    #[test]
    fn present_null_id_is_kept() {
        let Op::Message(m) = req(r#"{"type":"message","id":null}"#) else {
            panic!()
        };
        let v = body(&m.frame);
        assert_eq!(v["id"], Value::Null);
        assert!(v["ts"].is_number());
    }

    #[test]
    fn empty_or_null_to_broadcasts() {
        for text in [
            r#"{"type":"message"}"#,
            r#"{"type":"message","to":""}"#,
            r#"{"type":"message","to":null}"#,
        ] {
            let Op::Message(m) = req(text) else { panic!() };
            assert_eq!(m.to, None, "{text}");
        }
    }

    #[test]
    fn escaped_to_is_decoded() {
        let Op::Message(m) = req(r#"{"type":"message","to":"a\u00e9"}"#) else {
            panic!()
        };
        assert_eq!(m.to.as_deref(), Some("aé"));
    }

    #[test]
    fn bad_frames() {
        assert_eq!(invalid(b"\xff\xfe").code, ErrorCode::BadFrame);
        assert_eq!(invalid(b"not json").code, ErrorCode::BadFrame);
        assert_eq!(invalid(b"[1,2]").code, ErrorCode::BadFrame);
        assert_eq!(invalid(b"\"str\"").code, ErrorCode::BadFrame);
        assert_eq!(invalid(br#"{"type":"ping""#).code, ErrorCode::BadFrame);
        assert_eq!(invalid(br#"{"type":"ping"} x"#).code, ErrorCode::BadFrame);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let e = invalid(br#"{"to":"x"}"#);
        assert_eq!(
            (e.code, e.detail.as_str()),
            (ErrorCode::BadRequest, "missing field `type`")
        );
        let e = invalid(br#"{"type":5}"#);
        assert!(e.detail.contains("`type`"), "{e:?}");
        let e = invalid(br#"{"type":"message","to":5}"#);
        assert!(e.detail.contains("`to`"), "{e:?}");
        let e = invalid(br#"{"type":"register"}"#);
        assert!(e.detail.contains("`endpoint`"), "{e:?}");
        let e = invalid(br#"{"type":"register","endpoint":""}"#);
        assert!(e.detail.contains("`endpoint`"), "{e:?}");
        let e = invalid(br#"{"type":"hello","features":"acks"}"#);
        assert!(e.detail.contains("`features`"), "{e:?}");
        let e = invalid(br#"{"type":"nope"}"#);
        assert_eq!(e.code, ErrorCode::UnknownType);
    }

    #[test]
    fn hello_picks_known_features() {
        let Op::Hello { features, will } =
            req(r#"{"type":"hello","protocol":1,"features":["acks","future","rpc"]}"#)
        else {
            panic!()
        };
        assert!(features.acks() && features.has(Feature::Rpc));
        assert!(!features.errors() && !features.has(Feature::Topics));
        assert!(will.is_none());
        assert_eq!(features.names(), vec!["acks", "rpc"]);
    }

    #[test]
    fn rid_is_echoed_by_answers_and_errors() {
        let r = parse(frame::encode(br#"{"type":"ping","rid":"a1"}"#));
        assert_eq!(r.rid, Some(Rid("\"a1\"".into())));
        let v = body(&with_rid(pong(), r.rid.as_ref()));
        assert_eq!(v, json!({"rid":"a1","type":"pong"}));
        let r = parse(frame::encode(br#"{"type":"nope","rid":5}"#));
        let Op::Invalid(e) = r.op else { panic!() };
        assert_eq!(body(&e.to_frame())["rid"], json!(5));
        let e = invalid(br#"{"type":"ping","rid":{"a":1}}"#);
        assert!(e.detail.contains("`rid`"), "{e}");
    }

    #[test]
    fn error_frame_shape() {
        let mut e = ProtocolError::new(ErrorCode::EndpointNotFound, "gone");
        e.id = Some(MsgId::new(br#""m1""#));
        assert_eq!(
            body(&e.to_frame()),
            json!({"type":"error","code":"endpoint_not_found","detail":"gone","id":"m1"})
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)))]

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn fuzz_parse_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(frame::encode(&data));
        }

        /// JSON-ish text built from protocol fragments: never panics, and every
        /// accepted message is still a valid JSON object after splicing.
        #[test]
        fn fuzz_parse_jsonish(parts in proptest::collection::vec(prop_oneof![
            Just("{"), Just("}"), Just("\"type\""), Just(":"), Just(","), Just("\"message\""),
            Just("\"to\""), Just("\"id\""), Just("\"ts\""), Just("null"), Just("1.5"), Just("["), Just("]"),
            Just("\"register\""), Just("\"endpoint\""), Just("\"a\""), Just(" "), Just("\"\\u00e9\""),
        ], 0..24)) {
            let text: String = parts.concat();
            if let Op::Message(m) = parse(frame::encode(text.as_bytes())).op {
                let v: Value = serde_json::from_slice(frame::payload(&m.frame)).unwrap();
                prop_assert!(v.is_object());
                prop_assert!(v.get("id").is_some() && v.get("ts").is_some());
            }
        }
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
            match req(text) {
                Op::Invalid(e) => assert_eq!(e.code, code, "{text}: {e}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
