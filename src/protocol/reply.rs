//! `reply` (rpc): a responder's answer to the request its `reply_to` names
//! (a hermes client answers with a `message` to that address instead).

use bytes::Bytes;

use super::envelope::{body_of, opt_str, traceparent, Head};
use super::{Op, ProtocolError};

/// Every `reply_to` address starts with this (a reserved subject).
pub const REPLY_PREFIX: &str = "$reply.";

/// `{"type":"reply","reply_to":A,"body":B}`, or a hermes `message` to `A`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub reply_to: Box<str>,
    pub body: Option<Bytes>,
    /// Sent as a `message` (by a client without `rpc`).
    pub via_message: bool,
    /// The W3C `traceparent` as JSON text, carried into the response.
    pub traceparent: Option<Bytes>,
    /// The frame as the client sent it (what the monitor sees).
    pub frame: Bytes,
}

pub(crate) fn parse_reply(head: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    let reply_to = opt_str(head.reply_to, "reply_to")?
        .ok_or_else(|| ProtocolError::bad_request("missing field `reply_to`"))?;
    Ok(Op::Reply(Box::new(Reply {
        reply_to: reply_to.as_ref().into(),
        body: body_of(head.body, text, frame),
        via_message: false,
        traceparent: traceparent(head.traceparent, text, frame)?,
        frame: frame.clone(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::op_of as op;

    #[test]
    fn a_hermes_message_to_a_reply_address_is_a_reply() {
        let Op::Reply(r) = op(r#"{"type":"message","to":"$reply.9","body":"ok"}"#) else {
            panic!()
        };
        assert!(r.via_message);
        assert_eq!(&*r.reply_to, "$reply.9");
        assert_eq!(&r.body.unwrap()[..], br#""ok""#);
    }
}
