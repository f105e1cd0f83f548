//! `hello`: the features a session asks for (protocol 2) and its `will`, a
//! publish made for it if it ends without `bye`; `welcome`.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::envelope::{bad_subject, body_of, opt_field, opt_str, Head};
use super::{ErrorCode, Feature, Features, Op, ProtocolError, PROTOCOL_VERSION};
use crate::frame;
use crate::subject;

/// Largest `will` body, in bytes of JSON: a will is held for the session's
/// whole life, outside the memory budget, so it is a short notice.
pub const MAX_WILL_BODY: usize = 64 * 1024;

/// A session's will: published for it when it ends without `bye`.
#[derive(Debug, Clone)]
pub struct Will {
    pub subject: Box<str>,
    pub body: Option<Bytes>,
    pub retain: bool,
}

pub(crate) fn parse_hello(head: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    let names: Vec<Cow<'_, str>> =
        opt_field(head.features, "features", "an array of strings")?.unwrap_or_default();
    let mut features = Features::default();
    for name in names {
        // Unknown features are ignored: `welcome` lists what was granted.
        if let Some((f, _)) = Feature::ALL.iter().find(|(_, n)| *n == name) {
            features = features.with(*f);
        }
    }
    let will = match head.will.filter(|w| w.get() != "null") {
        None => None,
        Some(raw) => {
            if !features.has(Feature::Topics) {
                return Err(ProtocolError::new(
                    ErrorCode::NotNegotiated,
                    "a `will` is a publish: ask for the `topics` feature in the same `hello`",
                ));
            }
            Some(Box::new(parse_will(raw, text, frame)?))
        }
    };
    Ok(Op::Hello { features, will })
}

pub(crate) fn parse_will(raw: &RawValue, text: &str, frame: &Bytes) -> Result<Will, ProtocolError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::op_of as op;

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
