//! The wire protocol: what a frame's JSON means (see `docs/PROTOCOL.md`).
//!
//! Parsing happens on the connection's reader task, so the router only sees
//! validated [`Request`]s. A routed message is kept as its original frame bytes
//! (with `id`/`ts` spliced in when absent) and is never re-serialised.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::frame::{self, HEADER_LEN};

/// Version of the hookbus extensions negotiated with `hello`. hermes-bus 0.7
/// clients never send `hello` and get plain hermes behaviour.
pub const PROTOCOL_VERSION: u32 = 1;

/// Deepest nesting of JSON arrays and objects accepted in a frame. Deeper frames
/// are refused (`bad_frame`): Python's `json.loads`, which hermes clients use,
/// fails on nesting not much deeper, so the bus must not forward it.
pub const MAX_JSON_DEPTH: usize = 128;

/// Longest accepted endpoint name, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 256;

/// Optional behaviours a client can ask for in `hello`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// Registered senders also get `endpoint_not_found` errors (hermes sends them
    /// only to anonymous senders).
    pub errors: bool,
    /// Every routed message is answered with `{"type":"ack","id":…,"delivered":n}`.
    pub acks: bool,
}

impl Features {
    /// Feature names this server knows, in the order `welcome` lists them.
    pub const KNOWN: [&'static str; 2] = ["errors", "acks"];

    fn names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.errors {
            out.push("errors");
        }
        if self.acks {
            out.push("acks");
        }
        out
    }
}

/// One parsed client frame.
#[derive(Debug)]
pub enum Request {
    /// `{"type":"register","endpoint":N}`
    Register { endpoint: String },
    /// `{"type":"ping"}`
    Ping,
    /// `{"type":"message",…}`: forwarded as `frame`, every field kept.
    Message(Routed),
    /// `{"type":"list_endpoints"}`
    ListEndpoints,
    /// `{"type":"hello","protocol":1,"features":[…]}` (hookbus extension)
    Hello { features: Features },
    /// `{"type":"status"}` (hookbus extension)
    Status,
    /// `{"type":"hooks_status"}` (hookbus extension)
    HooksStatus,

    /// A message a filter hook dropped: never routed; a sender with `acks` is told.
    Dropped(Dropped),

    /// A frame that could not be accepted; answered with this error.
    Invalid(ProtocolError),
}

/// A message a filter hook dropped.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The message's `id`.
    pub id: serde_json::Value,
    /// The hook that dropped it, and its reason.
    pub hook: String,
    pub reason: String,
}

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
    /// The message's `id` as JSON, for error and ack replies (re-reads the frame:
    /// only called off the fast path or when acks were asked for).
    pub fn id(&self) -> serde_json::Value {
        #[derive(Deserialize)]
        struct IdOnly {
            #[serde(default)]
            id: serde_json::Value,
        }
        serde_json::from_slice::<IdOnly>(frame::payload(&self.frame))
            .map(|m| m.id)
            .unwrap_or_default()
    }
}

/// Error codes sent in `{"type":"error","code":…}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A length prefix over the limit; the connection is closed after this frame.
    FrameTooLarge,
    /// Not UTF-8, not JSON, or not a JSON object.
    BadFrame,
    /// A `type` this server does not know.
    UnknownType,
    /// A missing or mistyped field.
    BadRequest,
    /// `to` names no registered endpoint.
    EndpointNotFound,
    /// The connection is registered already.
    AlreadyRegistered,
    /// Another connection registered this connection's endpoint name.
    Replaced,
    /// No ping or message within the heartbeat timeout.
    HeartbeatTimeout,
    /// The client read nothing for the stall timeout while messages waited for it.
    SlowConsumer,
    /// The peer runs as another user.
    PermissionDenied,
    /// The server is at its connection limit.
    TooManyConnections,
    /// The server is shutting down.
    ShuttingDown,
    /// The client stayed inside one frame longer than the frame timeout.
    FrameTimeout,
}

/// A protocol error, sent to the client as an error frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub detail: String,
    /// The `id` of the message this error is about, if any.
    pub id: Option<serde_json::Value>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            id: None,
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, detail)
    }

    /// The error frame sent to the client.
    pub fn to_frame(&self) -> Bytes {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: ErrorCode,
            detail: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a serde_json::Value>,
        }
        frame::encode_json(&Wire {
            kind: "error",
            code: self.code,
            detail: &self.detail,
            id: self.id.as_ref(),
        })
    }
}

/// Fields the server looks at; everything else is carried through untouched.
/// Each is kept raw so a mistyped field can be reported by name.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    endpoint: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    ts: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    features: Option<&'a RawValue>,
}

/// `Some` for a present field, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A string field, or `None` when absent or `null`.
fn opt_str<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
) -> Result<Option<Cow<'a, str>>, ProtocolError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str::<Cow<'a, str>>(raw.get())
            .map(Some)
            .map_err(|_| ProtocolError::bad_request(format!("field `{field}` must be a string"))),
    }
}

/// Parses one frame (header included) into a request. Never fails: a bad frame
/// becomes [`Request::Invalid`] so the connection can answer it and carry on.
pub fn parse(frame: Bytes) -> Request {
    match parse_inner(frame) {
        Ok(req) => req,
        Err(e) => Request::Invalid(e),
    }
}

/// [`parse`], then refuses a message that the `id` and `ts` the bus adds would
/// take over `max_frame` bytes: nothing is ever delivered over the limit the bus
/// advertises. The connection stays open (the frame itself was read whole).
pub fn parse_within(frame: Bytes, max_frame: usize) -> Request {
    match parse(frame) {
        Request::Message(msg) if frame::payload(&msg.frame).len() > max_frame => {
            let mut error = ProtocolError::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "with the `id` and `ts` the bus adds, the message is {} bytes, over the {max_frame}-byte limit; send `id` and `ts` yourself or make it smaller",
                    frame::payload(&msg.frame).len()
                ),
            );
            error.id = Some(msg.id());
            Request::Invalid(error)
        }
        other => other,
    }
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

fn parse_inner(frame: Bytes) -> Result<Request, ProtocolError> {
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
    let head: Head = serde_json::from_str(text).map_err(|e| {
        let detail = if e.is_data() {
            // Only a duplicate of a field we read can fail here: everything else was
            // taken raw.
            format!("invalid message: {e}")
        } else {
            format!("payload is not valid JSON: {e}")
        };
        let code = if e.is_data() {
            ErrorCode::BadRequest
        } else {
            ErrorCode::BadFrame
        };
        ProtocolError::new(code, detail)
    })?;
    let kind = opt_str(head.kind, "type")?
        .ok_or_else(|| ProtocolError::bad_request("missing field `type`"))?;
    match &*kind {
        "message" => {
            let to = opt_str(head.to, "to")?
                .filter(|to| !to.is_empty())
                .map(|to| Box::<str>::from(to.as_ref()));
            let frame = if head.id.is_some() && head.ts.is_some() {
                frame
            } else {
                add_id_and_ts(text, head.id.is_none(), head.ts.is_none())
            };
            Ok(Request::Message(Routed { to, frame, hops: 0 }))
        }
        "register" => {
            let endpoint = opt_str(head.endpoint, "endpoint")?
                .ok_or_else(|| ProtocolError::bad_request("missing field `endpoint`"))?;
            if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_LEN {
                return Err(ProtocolError::bad_request(format!(
                    "field `endpoint` must be 1 to {MAX_ENDPOINT_LEN} bytes long"
                )));
            }
            Ok(Request::Register {
                endpoint: endpoint.into_owned(),
            })
        }
        "ping" => Ok(Request::Ping),
        "list_endpoints" => Ok(Request::ListEndpoints),
        "status" => Ok(Request::Status),
        "hooks_status" => Ok(Request::HooksStatus),

        "hello" => {
            let names: Vec<String> = match head.features {
                None => Vec::new(),
                Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
                    ProtocolError::bad_request("field `features` must be an array of strings")
                })?,
            };
            let mut features = Features::default();
            for name in names {
                match name.as_str() {
                    "errors" => features.errors = true,
                    "acks" => features.acks = true,
                    _ => {} // unknown features are ignored: `welcome` lists what was granted
                }
            }
            Ok(Request::Hello { features })
        }
        other => Err(ProtocolError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type `{other}`; known: message, register, ping, list_endpoints, hello, status, hooks_status"
            ),
        )),
    }
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
        out.put_slice(b"\"id\":\"");
        out.put_slice(
            uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        out.put_slice(b"\",");
    }
    if ts {
        out.put_slice(format!("\"ts\":{:?},", unix_now()).as_bytes());
    }
    out.put_slice(&text.as_bytes()[brace..]);
    let len = (out.len() - HEADER_LEN) as u32;
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// Seconds since the Unix epoch, as hermes's `time.time()`.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `{"type":"registered","endpoint":N,"session_id":S}`
pub fn registered(endpoint: &str, session_id: &str) -> Bytes {
    frame::encode_json(&serde_json::json!({
        "type": "registered", "endpoint": endpoint, "session_id": session_id,
    }))
}

/// `{"type":"pong"}`
pub fn pong() -> Bytes {
    frame::encode(br#"{"type":"pong"}"#)
}

/// `{"type":"welcome",…}`, the answer to `hello`.
pub fn welcome(features: Features, max_frame_len: usize) -> Bytes {
    frame::encode_json(&serde_json::json!({
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "server": concat!("hookbus/", env!("CARGO_PKG_VERSION")),
        "features": features.names(),
        "max_frame": max_frame_len,
    }))
}

/// `{"type":"ack","id":…,"delivered":n}`
pub fn ack(id: serde_json::Value, delivered: usize) -> Bytes {
    frame::encode_json(&serde_json::json!({"type": "ack", "id": id, "delivered": delivered}))
}

/// `{"type":"ack","id":…,"delivered":0,"dropped_by":hook,"reason":…}`: a filter
/// hook dropped the message.
pub fn ack_dropped(dropped: &Dropped) -> Bytes {
    frame::encode_json(&serde_json::json!({
        "type": "ack", "id": dropped.id, "delivered": 0,
        "dropped_by": dropped.hook, "reason": dropped.reason,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn req(json: &str) -> Request {
        parse(frame::encode(json.as_bytes()))
    }

    fn invalid(json: &[u8]) -> ProtocolError {
        match parse(frame::encode(json)) {
            Request::Invalid(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn body(frame: &Bytes) -> Value {
        serde_json::from_slice(frame::payload(frame)).unwrap()
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
        assert!(matches!(
            req(&nested(MAX_JSON_DEPTH - 1)),
            Request::Message(_)
        ));
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
        assert!(matches!(req(&brackets), Request::Message(_)));
    }

    #[test]
    fn a_message_the_id_and_ts_would_take_over_the_limit_is_refused() {
        let text = r#"{"type":"message","to":"a","body":"xxxxxxxxxx"}"#;
        let exact = text.len();
        match parse_within(frame::encode(text.as_bytes()), exact) {
            Request::Invalid(e) => {
                assert_eq!(e.code, ErrorCode::FrameTooLarge);
                assert!(e.id.is_some());
            }
            other => panic!("{other:?}"),
        }
        let with_both = r#"{"type":"message","id":"1","ts":1.0,"to":"a"}"#;
        assert!(matches!(
            parse_within(frame::encode(with_both.as_bytes()), with_both.len()),
            Request::Message(_)
        ));
    }

    #[test]
    fn message_keeps_every_field_and_fills_id_and_ts() {
        let Request::Message(m) =
            req(r#" {"type":"message","to":"b","body":{"x":[1,2]},"extra":true}"#)
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
        let Request::Message(m) = req(text) else {
            panic!()
        };
        assert_eq!(frame::payload(&m.frame), text.as_bytes());
        assert_eq!(m.id(), json!("x"));
    }

    #[test]
    fn present_null_id_is_kept() {
        let Request::Message(m) = req(r#"{"type":"message","id":null}"#) else {
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
            let Request::Message(m) = req(text) else {
                panic!()
            };
            assert_eq!(m.to, None, "{text}");
        }
    }

    #[test]
    fn escaped_to_is_decoded() {
        let Request::Message(m) = req(r#"{"type":"message","to":"a\u00e9"}"#) else {
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
        let Request::Hello { features } =
            req(r#"{"type":"hello","protocol":1,"features":["acks","future"]}"#)
        else {
            panic!()
        };
        assert_eq!(
            features,
            Features {
                acks: true,
                errors: false
            }
        );
    }

    #[test]
    fn error_frame_shape() {
        let mut e = ProtocolError::new(ErrorCode::EndpointNotFound, "gone");
        e.id = Some(json!("m1"));
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
            if let Request::Message(m) = parse(frame::encode(text.as_bytes())) {
                let v: Value = serde_json::from_slice(frame::payload(&m.frame)).unwrap();
                prop_assert!(v.is_object());
                prop_assert!(v.get("id").is_some() && v.get("ts").is_some());
            }
        }
    }
}
