//! `register` (hermes): the connection takes an endpoint name; `registered`.

use bytes::Bytes;

use super::envelope::{opt_str, Head};
use super::{Op, ProtocolError};
use crate::frame;

/// Longest accepted endpoint name, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 256;

pub(crate) fn parse_register(head: &Head<'_>, _: &str, _: &Bytes) -> Result<Op, ProtocolError> {
    let endpoint = opt_str(head.endpoint, "endpoint")?
        .ok_or_else(|| ProtocolError::bad_request("missing field `endpoint`"))?;
    if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(ProtocolError::bad_request(format!(
            "field `endpoint` must be 1 to {MAX_ENDPOINT_LEN} bytes long"
        )));
    }
    Ok(Op::Register {
        endpoint: endpoint.into_owned(),
    })
}

/// `{"type":"registered","endpoint":N,"session_id":S}`
pub fn registered(endpoint: &str, session_id: &str) -> Bytes {
    frame::encode_json(&serde_json::json!({
        "type": "registered", "endpoint": endpoint, "session_id": session_id,
    }))
}
