//! A frame's envelope: the fields every request type reads, each kept raw so a
//! mistyped one can be reported by name, and the helpers that check them.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::{ErrorCode, ProtocolError};
use crate::subject::SubjectError;

/// Declares a struct of raw fields, `type` first: `Some` for a present field,
/// even `null`, so a mistyped one can be reported by name; everything else in
/// the frame is carried through untouched.
macro_rules! raw_fields {
    ($(#[$doc:meta])* struct $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Deserialize, Default)]
        pub(crate) struct $name<'a> {
            /// Read even where it is known, so that a second `type` is refused.
            #[allow(dead_code)]
            #[serde(rename = "type", default, borrow, deserialize_with = "present")]
            pub kind: Option<&'a RawValue>,
            $(
                #[serde(default, borrow, deserialize_with = "present")]
                pub $field: Option<&'a RawValue>,
            )*
        }
    };
}

/// The envelope's structs, each field named once.
macro_rules! envelope {
    (common: [$($common:ident),* $(,)?], extra: [$($extra:ident),* $(,)?] $(,)?) => {
        raw_fields! {
            /// The fields every frame is read for, in one pass.
            struct Common { $($common),* }
        }
        raw_fields! {
            /// The fields only protocol-2 requests have, read in a pass of their
            /// own for those types alone, so messages (most frames) do not pay
            /// for them.
            struct Extra { $($extra),* }
        }
        raw_fields! {
            /// A frame's envelope, as the request parsers see it: [`Common`] and
            /// [`Extra`] together, read in one pass when the frame's type is
            /// known up front.
            struct Head { $($common,)* $($extra),* }
        }

        impl<'a> Head<'a> {
            pub(crate) fn new(c: Common<'a>, e: Extra<'a>) -> Self {
                Head {
                    kind: c.kind,
                    $($common: c.$common,)*
                    $($extra: e.$extra,)*
                }
            }
        }
    };
}

envelope! {
    common: [to, endpoint, id, ts, features, rid],
    extra: [
        subject, body, queue, on_full, retain, sid, iid, timeout_ms, gather, reply_to,
        kinds, will, traceparent, key, value, ttl_s, if_revision, prefix, wid, snapshot,
    ],
}

/// Reads `text` as `T`, naming what is wrong (a duplicate field, or not JSON).
#[inline]
pub(crate) fn read<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, ProtocolError> {
    serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            // Only a duplicate of a field we read can fail here: everything else
            // was taken raw.
            ProtocolError::bad_request(format!("invalid message: {e}"))
        } else {
            ProtocolError::new(
                ErrorCode::BadFrame,
                format!("payload is not valid JSON: {e}"),
            )
        }
    })
}

/// `Some` for a present field, even when its value is `null`.
pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A string field, or `None` when absent or `null`.
pub(crate) fn opt_str<'a>(
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

/// A field as `T`, or `None` when absent or `null`; a mistyped field is named.
pub(crate) fn opt_field<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &str,
    what: &str,
) -> Result<Option<T>, ProtocolError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str::<T>(raw.get())
            .map(Some)
            .map_err(|_| ProtocolError::bad_request(format!("field `{field}` must be {what}"))),
    }
}

/// Refuses JSON some clients cannot read back: numbers out of the range of a
/// double (`1e999`) and lone UTF-16 surrogates (`"\ud800"`). Stored values and
/// payloads are checked, as they are handed out again later.
pub(crate) fn portable(raw: &RawValue, field: &str) -> Result<(), ProtocolError> {
    serde_json::from_str::<serde_json::Value>(raw.get())
        .map(drop)
        .map_err(|e| {
            ProtocolError::bad_request(format!(
                "field `{field}` must be JSON every client can read back ({e}): numbers within the range of a double, no lone surrogates"
            ))
        })
}

/// Longest `traceparent`, in bytes of JSON (a W3C one is 57).
pub const MAX_TRACEPARENT_LEN: usize = 256;

/// A request's `traceparent` (W3C trace context), carried as sent into the
/// frames the bus builds from it; `None` when absent or `null`.
pub(crate) fn traceparent(
    raw: Option<&RawValue>,
    text: &str,
    frame: &Bytes,
) -> Result<Option<Bytes>, ProtocolError> {
    Ok(check_traceparent(raw)?.map(|raw| slice_of(frame, text, raw)))
}

/// A request's `traceparent` if it has one, checked.
pub(crate) fn check_traceparent(
    raw: Option<&RawValue>,
) -> Result<Option<&RawValue>, ProtocolError> {
    match raw.filter(|t| t.get() != "null") {
        None => Ok(None),
        Some(raw) if raw.get().starts_with('"') && raw.get().len() <= MAX_TRACEPARENT_LEN => {
            Ok(Some(raw))
        }
        Some(_) => Err(ProtocolError::bad_request(format!(
            "field `traceparent` must be a string (a W3C trace context, e.g. \"00-<trace id>-<span id>-01\") of at most {MAX_TRACEPARENT_LEN} bytes"
        ))),
    }
}

/// The bytes of `raw` (a slice of `text`, which is `frame`'s payload) as a slice
/// of `frame`, without copying.
pub(crate) fn slice_of(frame: &Bytes, text: &str, raw: &RawValue) -> Bytes {
    frame.slice(super::span::range_in(text, raw.get()))
}

pub(crate) fn required_subject<'a>(head: &Head<'a>) -> Result<Cow<'a, str>, ProtocolError> {
    opt_str(head.subject, "subject")?
        .ok_or_else(|| ProtocolError::bad_request("missing field `subject`"))
}

pub(crate) fn required_u64(raw: Option<&RawValue>, field: &str) -> Result<u64, ProtocolError> {
    opt_field::<u64>(raw, field, "a non-negative integer")?
        .ok_or_else(|| ProtocolError::bad_request(format!("missing field `{field}`")))
}

/// A present, non-null JSON body as a slice of the frame.
pub(crate) fn body_of(raw: Option<&RawValue>, text: &str, frame: &Bytes) -> Option<Bytes> {
    raw.filter(|b| b.get() != "null")
        .map(|b| slice_of(frame, text, b))
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

pub(crate) fn bad_subject(e: SubjectError) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadSubject, e.to_string())
}
