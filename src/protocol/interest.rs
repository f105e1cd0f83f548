//! `interest` and `uninterest` (topics): who subscribes to what, now and as it
//! changes.

use bytes::Bytes;

use super::envelope::{bad_subject, required_subject, required_u64, Head};
use super::{Op, ProtocolError};
use crate::subject;

/// `{"type":"interest","subject":P}`
#[derive(Debug)]
pub struct Interest {
    pub pattern: Box<str>,
}

pub(crate) fn parse_interest(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    let pattern = required_subject(head)?;
    subject::check_pattern(&pattern).map_err(bad_subject)?;
    Ok(Op::Interest(Interest {
        pattern: pattern.as_ref().into(),
    }))
}

pub(crate) fn parse_uninterest(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    Ok(Op::Uninterest {
        iid: required_u64(head.iid, "iid")?,
    })
}
