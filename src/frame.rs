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

/// A frame on its way out. Most are whole; an event or a request to a
/// responder is a short head for its one recipient and a tail shared by all of
/// them (the subject, id and body, built once per publish, never copied per
/// subscriber). An event's head is formatted by the writer, so delivering one
/// allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// A frame, header included.
    Whole(Bytes),
    /// `{"type":"event"[,"retained":true],"sid":N`, then `tail`.
    Event {
        sid: u64,
        retained: bool,
        tail: Bytes,
    },
    /// A head (header included), then a tail.
    Parts(Box<(Bytes, Bytes)>),
}

const EVENT_HEAD: &[u8] = b"{\"type\":\"event\",\"sid\":";
const RETAINED_EVENT_HEAD: &[u8] = b"{\"type\":\"event\",\"retained\":true,\"sid\":";

/// Longest head of an [`OutFrame::Event`] (header included).
pub const MAX_EVENT_HEAD: usize = HEADER_LEN + RETAINED_EVENT_HEAD.len() + 20;

impl OutFrame {
    /// Bytes on the wire (header included).
    pub fn len(&self) -> usize {
        match self {
            OutFrame::Whole(frame) => frame.len(),
            OutFrame::Event {
                sid,
                retained,
                tail,
            } => event_head_len(*sid, *retained) + tail.len(),
            OutFrame::Parts(parts) => parts.0.len() + parts.1.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the frame's head (header included) to `out` (a `Vec`, or a
    /// stack buffer of [`MAX_EVENT_HEAD`] bytes) and returns its tail, to be
    /// written after it.
    pub fn put_head<'a>(&'a self, out: &mut impl BufMut) -> &'a [u8] {
        match self {
            OutFrame::Whole(frame) => frame,
            OutFrame::Event {
                sid,
                retained,
                tail,
            } => {
                let len = self.len() - HEADER_LEN;
                out.put_u32(len as u32);
                out.put_slice(if *retained {
                    RETAINED_EVENT_HEAD
                } else {
                    EVENT_HEAD
                });
                out.put_slice(itoa(*sid, &mut [0; 20]));
                tail
            }
            OutFrame::Parts(parts) => {
                out.put_slice(&parts.0);
                &parts.1
            }
        }
    }

    /// The whole frame in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        let tail = self.put_head(&mut out);
        out.extend_from_slice(tail);
        out
    }
}

impl From<Bytes> for OutFrame {
    fn from(frame: Bytes) -> Self {
        OutFrame::Whole(frame)
    }
}

fn event_head_len(sid: u64, retained: bool) -> usize {
    let prefix = if retained {
        RETAINED_EVENT_HEAD.len()
    } else {
        EVENT_HEAD.len()
    };
    HEADER_LEN + prefix + sid.checked_ilog10().unwrap_or(0) as usize + 1
}

/// `n` in decimal, written at the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
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
    fn an_event_head_is_as_long_as_it_says_at_every_width() {
        for sid in [0, 9, 10, 99, 100, 12345, u64::MAX / 10, u64::MAX] {
            for retained in [false, true] {
                let frame = OutFrame::Event {
                    sid,
                    retained,
                    tail: Bytes::from_static(b"}"),
                };
                let all = frame.to_vec();
                assert_eq!(all.len(), frame.len());
                assert_eq!(
                    decode(&mut BytesMut::from(&all[..]), 1 << 20)
                        .unwrap()
                        .unwrap(),
                    all
                );
                let v: serde_json::Value = serde_json::from_slice(&all[HEADER_LEN..]).unwrap();
                assert_eq!(v["sid"], sid);
                assert_eq!(v.get("retained").is_some(), retained);
                assert!(all.len() - 1 <= MAX_EVENT_HEAD);
            }
        }
    }

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
