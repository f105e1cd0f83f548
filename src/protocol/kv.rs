//! Feature `kv`: a durable key-value store with revisions, TTLs and watches.
//! `kv_put`, `kv_get`, `kv_delete`, `kv_keys`, `kv_watch`, `kv_unwatch`, and
//! the frames that answer them.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::envelope::required_u64;
use super::envelope::slice_of;
use super::{opt_field, opt_str, ErrorCode, Head, Op, ProtocolError};
use crate::frame;
use crate::subject;

/// Largest value, in bytes of JSON.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

/// Longest TTL: ten years.
pub const MAX_TTL_S: f64 = 10.0 * 365.0 * 86400.0;

/// Most keys one `kv_keys` lists (`more` says when there are others).
pub const MAX_LISTED: usize = 10_000;

#[derive(Debug)]
pub enum KvOp {
    Put {
        key: Arc<str>,
        value: Bytes,
        ttl_ms: Option<u64>,
        if_revision: Option<u64>,
    },
    Get {
        key: Arc<str>,
    },
    Delete {
        key: Arc<str>,
        if_revision: Option<u64>,
    },
    Keys {
        prefix: Box<str>,
    },
    Watch {
        pattern: Box<str>,
        /// Send the current values first (the default).
        snapshot: bool,
    },
    Unwatch {
        wid: u64,
    },
}

/// A key: a subject (`.`-separated tokens, no wildcards).
fn key(head: &Head<'_>) -> Result<Arc<str>, ProtocolError> {
    let key = opt_str(head.key, "key")?
        .ok_or_else(|| ProtocolError::bad_request("missing field `key`"))?;
    subject::check_subject(&key).map_err(|e| {
        ProtocolError::new(
            ErrorCode::BadKey,
            format!("bad key: {e} (keys follow the rules of subjects)"),
        )
    })?;
    Ok(Arc::from(key.as_ref()))
}

fn if_revision(head: &Head<'_>) -> Result<Option<u64>, ProtocolError> {
    opt_field(head.if_revision, "if_revision", "a non-negative integer")
}

fn kv(op: KvOp) -> Result<Op, ProtocolError> {
    Ok(Op::Kv(Box::new(op)))
}

pub(super) fn parse_put(head: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    let key = key(head)?;
    let value: &RawValue = head
        .value
        .ok_or_else(|| ProtocolError::bad_request("missing field `value` (any JSON)"))?;
    if value.get().len() > MAX_VALUE_LEN {
        return Err(ProtocolError::new(
            ErrorCode::ValueTooLarge,
            format!(
                "the value is {} bytes of JSON; a KV value has at most {MAX_VALUE_LEN}",
                value.get().len()
            ),
        ));
    }
    super::portable(value, "value")?;
    let ttl_ms = match opt_field::<f64>(head.ttl_s, "ttl_s", "a number of seconds")? {
        None => None,
        Some(t) if t > 0.0 && t <= MAX_TTL_S => Some((t * 1000.0).ceil() as u64),
        Some(_) => {
            return Err(ProtocolError::bad_request(format!(
                "field `ttl_s` must be over 0 and at most {MAX_TTL_S} seconds"
            )))
        }
    };
    kv(KvOp::Put {
        key,
        value: slice_of(frame, text, value),
        ttl_ms,
        if_revision: if_revision(head)?,
    })
}

pub(super) fn parse_get(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    kv(KvOp::Get { key: key(head)? })
}

pub(super) fn parse_delete(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    kv(KvOp::Delete {
        key: key(head)?,
        if_revision: if_revision(head)?,
    })
}

pub(super) fn parse_keys(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    let prefix = opt_str(head.prefix, "prefix")?.unwrap_or_default();
    kv(KvOp::Keys {
        prefix: prefix.as_ref().into(),
    })
}

pub(super) fn parse_watch(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    let pattern = opt_str(head.key, "key")?
        .ok_or_else(|| ProtocolError::bad_request("missing field `key` (a key or a pattern)"))?;
    subject::check_pattern(&pattern).map_err(|e| {
        ProtocolError::new(
            ErrorCode::BadKey,
            format!("bad key pattern: {e} (patterns follow the rules of subjects)"),
        )
    })?;
    kv(KvOp::Watch {
        pattern: pattern.as_ref().into(),
        snapshot: opt_field(head.snapshot, "snapshot", "true or false")?.unwrap_or(true),
    })
}

pub(super) fn parse_unwatch(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    kv(KvOp::Unwatch {
        wid: required_u64(head.wid, "wid")?,
    })
}

/// How a watched key changed.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Put,
    Delete,
    Expire,
}

/// `{"type":"kv_stored","key":K,"revision":n}`
pub fn stored(key: &str, revision: u64) -> Bytes {
    frame::encode_json(&serde_json::json!({"type": "kv_stored", "key": key, "revision": revision}))
}

/// `{"type":"kv_deleted","key":K,"revision":n}`
pub fn deleted(key: &str, revision: u64) -> Bytes {
    frame::encode_json(&serde_json::json!({"type": "kv_deleted", "key": key, "revision": revision}))
}

#[derive(Serialize)]
struct ValueFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    wid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<ChangeKind>,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

fn raw(value: &[u8]) -> Option<&RawValue> {
    // Values are JSON the bus parsed when they were put (or read back from
    // its own database): they parse again.
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| serde_json::from_str(v).ok())
}

/// `{"type":"kv_value","key":K,"value":V,"revision":n,"expires_at_ms":t}`
pub fn value(key: &str, value: &[u8], revision: u64, expires_at_ms: Option<u64>) -> Bytes {
    frame::encode_json(&ValueFrame {
        kind: "kv_value",
        wid: None,
        op: None,
        key,
        value: raw(value),
        revision,
        expires_at_ms,
    })
}

/// `{"type":"kv_change","wid":w,"op":"put"|"delete"|"expire","key":K,"value":V,"revision":n}`
pub fn change(
    wid: u64,
    op: ChangeKind,
    key: &str,
    value: Option<&[u8]>,
    revision: u64,
    expires_at_ms: Option<u64>,
) -> Bytes {
    frame::encode_json(&ValueFrame {
        kind: "kv_change",
        wid: Some(wid),
        op: Some(op),
        key,
        value: value.and_then(raw),
        revision,
        expires_at_ms,
    })
}

/// `{"type":"kv_key_list","keys":[…],"more":bool}`
pub fn key_list(keys: &[&str], more: bool) -> Bytes {
    frame::encode_json(&serde_json::json!({"type": "kv_key_list", "keys": keys, "more": more}))
}

/// `{"type":"kv_watching","wid":w}`, `{"type":"kv_synced","wid":w}` or
/// `{"type":"kv_unwatched","wid":w}`.
pub fn watch_frame(kind: &'static str, wid: u64) -> Bytes {
    frame::encode_json(&serde_json::json!({"type": kind, "wid": wid}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse;
    use serde_json::{json, Value};

    fn op(json: &str) -> Result<KvOp, ProtocolError> {
        match parse(frame::encode(json.as_bytes())).op {
            Op::Kv(op) => Ok(*op),
            Op::Invalid(e) => Err(*e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn put_keeps_the_value_as_sent_and_checks_its_fields() {
        let KvOp::Put {
            key,
            value,
            ttl_ms,
            if_revision,
        } = op(r#"{"type":"kv_put","key":"a.b","value":{"x": [1]},"ttl_s":1.5,"if_revision":0}"#)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (&*key, &value[..], ttl_ms, if_revision),
            ("a.b", &br#"{"x": [1]}"#[..], Some(1500), Some(0))
        );
        for (json, code) in [
            (
                r#"{"type":"kv_put","key":"a.*","value":1}"#,
                ErrorCode::BadKey,
            ),
            (r#"{"type":"kv_put","key":"a"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"kv_put","key":"a","value":1,"ttl_s":0}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"kv_put","key":"a","value":1,"if_revision":-1}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"type":"kv_watch","key":"a.>.b"}"#, ErrorCode::BadKey),
        ] {
            assert_eq!(op(json).unwrap_err().code, code, "{json}");
        }
        let big = format!(
            r#"{{"type":"kv_put","key":"a","value":"{}"}}"#,
            "x".repeat(MAX_VALUE_LEN)
        );
        assert_eq!(op(&big).unwrap_err().code, ErrorCode::ValueTooLarge);
    }

    #[test]
    fn answer_frames_are_json() {
        let v: Value =
            serde_json::from_slice(frame::payload(&value("k", br#"{"a":1}"#, 3, None))).unwrap();
        assert_eq!(
            v,
            json!({"type":"kv_value","key":"k","value":{"a":1},"revision":3})
        );
        let v: Value = serde_json::from_slice(frame::payload(&change(
            2,
            ChangeKind::Expire,
            "k",
            None,
            9,
            None,
        )))
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"kv_change","wid":2,"op":"expire","key":"k","revision":9})
        );
    }
}
