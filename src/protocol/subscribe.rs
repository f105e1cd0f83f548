//! `subscribe` and `unsubscribe` (topics): a pattern, an optional queue group,
//! what happens when the subscriber cannot keep up; the `gap` frame.

use std::sync::Arc;

use bytes::Bytes;

use super::envelope::{bad_subject, opt_str, required_subject, required_u64, Head};
use super::{Op, ProtocolError};
use crate::frame;
use crate::subject;

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

pub(crate) fn parse_subscribe(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
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

pub(crate) fn parse_unsubscribe(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    Ok(Op::Unsubscribe {
        sid: required_u64(head.sid, "sid")?,
    })
}

/// `{"type":"gap","sid":N,"missed":n}`
pub fn gap(sid: u64, missed: u64) -> Bytes {
    frame::encode(format!(r#"{{"type":"gap","sid":{sid},"missed":{missed}}}"#).as_bytes())
}
