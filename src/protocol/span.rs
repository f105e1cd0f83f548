//! A field of a request kept as where it sits in its frame, so the busiest
//! requests (publishes) carry their fields without a copy, an allocation or a
//! reference count each.

use std::ops::Range;

use serde_json::value::RawValue;

use crate::frame::HEADER_LEN;

/// The JSON text of a field: a range of its frame, or text the bus made or
/// decoded (a missing `id` or `ts`, a subject written with escapes).
#[derive(Debug, Clone)]
pub(crate) enum Text {
    /// Bytes of the frame (header included in the offsets).
    Sent { start: u32, end: u32 },
    /// Up to [`INLINE`] bytes made by the bus: a quoted UUID, a timestamp.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Anything longer the bus made or decoded.
    Owned(Box<[u8]>),
}

/// Room for a quoted hyphenated UUID.
const INLINE: usize = 38;

impl Text {
    /// The bytes of `part`, a slice of `text`, which is the payload of the frame
    /// the offsets are into.
    pub fn sent(text: &str, part: &str) -> Self {
        let Range { start, end } = range_in(text, part);
        match (u32::try_from(start), u32::try_from(end)) {
            (Ok(start), Ok(end)) => Text::Sent { start, end },
            // Past 4 GiB into a frame (a --max-frame that large): a copy.
            _ => Text::Owned(part.as_bytes().into()),
        }
    }

    /// `raw`, a value read from `text`, as it is sent.
    pub fn raw(text: &str, raw: &RawValue) -> Self {
        Self::sent(text, raw.get())
    }

    /// Bytes the bus made.
    pub fn made(made: &[u8]) -> Self {
        if made.len() > INLINE {
            return Text::Owned(made.into());
        }
        let mut bytes = [0; INLINE];
        bytes[..made.len()].copy_from_slice(made);
        Text::Inline {
            len: made.len() as u8,
            bytes,
        }
    }

    /// The text, given the frame it was read from.
    pub fn get<'a>(&'a self, frame: &'a [u8]) -> &'a [u8] {
        match self {
            Text::Sent { start, end } => frame.get(*start as usize..*end as usize).unwrap_or(&[]),
            Text::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Text::Owned(bytes) => bytes,
        }
    }
}

/// Where `part` (a slice of `text`, the payload of a frame) sits in the frame.
pub(super) fn range_in(text: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - text.as_ptr() as usize + HEADER_LEN;
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_text_is_read_back_from_the_frame_and_made_text_from_itself() {
        let frame = crate::frame::encode(br#"{"id":"abc"}"#);
        let text = std::str::from_utf8(&frame[HEADER_LEN..]).unwrap();
        let id = Text::sent(text, &text[6..11]);
        assert_eq!(id.get(&frame), br#""abc""#);
        assert_eq!(Text::made(b"1.5").get(&frame), b"1.5");
        let long = [b'x'; 100];
        assert_eq!(Text::made(&long).get(&frame), &long[..]);
        assert_eq!(Text::made(&long[..INLINE]).get(&frame), &long[..INLINE]);
    }
}
