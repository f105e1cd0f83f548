//! Frame codec: every frame is a 4-byte big-endian length followed by that many bytes
//! of payload (one UTF-8 JSON object). This is the hermes-bus 0.7 framing.
//!
//! Decoding is incremental over a [`BytesMut`] read buffer and never allocates the
//! size a peer *claims*: a length over the limit is reported as soon as the 4-byte
//! header is in, before any payload is buffered.

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default largest accepted payload (10 MiB, as in hermes-bus). `--max-frame` changes it.
pub const DEFAULT_MAX_FRAME_LEN: usize = 10 * 1024 * 1024;

/// A frame whose header announces more than the configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds the limit of {max} bytes")]
pub struct FrameTooLarge {
    /// Length the header announced.
    pub len: usize,
    /// The limit in force.
    pub max: usize,
}

/// Takes one complete frame off the front of `buf`.
///
/// Returns the *whole* frame (header included) so a routed message can be forwarded
/// without copying; the payload is `frame[HEADER_LEN..]`. Returns `Ok(None)` when more
/// bytes are needed; [`in_progress`] then tells how long the frame being read is,
/// so the caller can make room for it (after asking its memory budget).
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameTooLarge> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max {
        return Err(FrameTooLarge { len, max });
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(buf.split_to(total).freeze()))
}

/// Length (header included) of the frame at the front of `buf`, once its header
/// is in.
pub fn in_progress(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..HEADER_LEN)?;
    Some(HEADER_LEN + u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize)
}

/// A frame on its way out, in two parts written one after the other: a head
/// the bus built for one recipient and a tail shared by many (an event's
/// subject, id and body are built once per publish and never copied per
/// subscriber). Most frames are all head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutFrame {
    pub head: Bytes,
    pub tail: Bytes,
}

impl OutFrame {
    /// Bytes on the wire (header included).
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for OutFrame {
    fn from(head: Bytes) -> Self {
        OutFrame {
            head,
            tail: Bytes::new(),
        }
    }
}

/// Builds a frame (header and payload) from a payload.
pub fn encode(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    // Payloads we build are far below 4 GiB; incoming ones were bounded by `decode`.
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// Builds a frame holding `value` serialised as JSON.
pub fn encode_json(value: &impl serde::Serialize) -> Bytes {
    let mut out = BytesMut::with_capacity(128);
    out.put_u32(0);
    let mut writer = out.writer();
    // Serialising our own protocol types into memory cannot fail: they hold only
    // strings, numbers, maps with string keys and `serde_json::Value`s.
    if serde_json::to_writer(&mut writer, value).is_err() {
        unreachable!("serialising a protocol value to memory failed");
    }
    let mut out = writer.into_inner();
    let len = (out.len() - HEADER_LEN) as u32;
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// The payload of a frame built by [`encode`] or returned by [`decode`].
pub fn payload(frame: &Bytes) -> &[u8] {
    &frame[HEADER_LEN..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let frame = encode(br#"{"type":"ping"}"#);
        let mut buf = BytesMut::from(&frame[..]);
        let got = decode(&mut buf, 100).unwrap().unwrap();
        assert_eq!(payload(&got), br#"{"type":"ping"}"#);
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_header_and_body_wait_for_more() {
        let frame = encode(b"{}");
        let mut buf = BytesMut::from(&frame[..3]);
        assert_eq!(decode(&mut buf, 100), Ok(None));
        buf.extend_from_slice(&frame[3..5]);
        assert_eq!(decode(&mut buf, 100), Ok(None));
        buf.extend_from_slice(&frame[5..]);
        assert_eq!(payload(&decode(&mut buf, 100).unwrap().unwrap()), b"{}");
    }

    #[test]
    fn oversized_header_is_rejected_without_allocating() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let cap = buf.capacity();
        assert_eq!(
            decode(&mut buf, 1024),
            Err(FrameTooLarge {
                len: u32::MAX as usize,
                max: 1024
            })
        );
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn encode_json_sets_length() {
        let frame = encode_json(&serde_json::json!({"type": "pong"}));
        let mut buf = BytesMut::from(&frame[..]);
        let got = decode(&mut buf, 100).unwrap().unwrap();
        assert_eq!(payload(&got), br#"{"type":"pong"}"#);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)))]

        /// Arbitrary bytes, split at arbitrary points: the decoder never panics, never
        /// reserves more than the limit, and frames it returns are well formed.
        #[test]
        fn fuzz_decoder(data in proptest::collection::vec(any::<u8>(), 0..4096),
                        cuts in proptest::collection::vec(any::<usize>(), 0..8),
                        max in 0usize..2048) {
            let mut buf = BytesMut::new();
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            points.push(data.len());
            points.sort_unstable();
            let mut at = 0;
            for p in points {
                buf.extend_from_slice(&data[at..p]);
                at = p;
                loop {
                    match decode(&mut buf, max) {
                        Ok(Some(frame)) => {
                            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
                            prop_assert_eq!(frame.len(), HEADER_LEN + len);
                            prop_assert!(len <= max);
                        }
                        Ok(None) => break,
                        Err(e) => { prop_assert!(e.len > max); return Ok(()); }
                    }
                }
                prop_assert!(buf.capacity() <= data.len() + HEADER_LEN + max + 64);
            }
        }

        /// Any sequence of payloads survives encode → arbitrary chunking → decode.
        #[test]
        fn fuzz_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
                           chunk in 1usize..64) {
            let wire: Vec<u8> = payloads.iter().flat_map(|p| encode(p).to_vec()).collect();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(frame) = decode(&mut buf, 300).unwrap() {
                    got.push(payload(&frame).to_vec());
                }
            }
            prop_assert_eq!(got, payloads);
        }
    }
}
