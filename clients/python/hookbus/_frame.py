"""Frames: a 4-byte big-endian payload length, then one UTF-8 JSON object."""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, Iterator, Mapping, Optional

from .errors import BadFrame, FrameTooLarge

#: Largest payload the bus accepts by default (10 MiB); `welcome` says the real limit.
MAX_FRAME = 10 * 1024 * 1024

HEADER = struct.Struct(">I")


def encode(frame: Mapping[str, Any], max_frame: int = MAX_FRAME) -> bytes:
    """The bytes of one frame (header and payload).

    Raises `TypeError` for a frame that is not a mapping or holds something JSON
    cannot encode, `ValueError` for NaN or infinite floats (not JSON), and
    `FrameTooLarge` for a payload over `max_frame` bytes.
    """
    if not isinstance(frame, Mapping):
        raise TypeError(f"a frame is a JSON object, not {type(frame).__name__}")
    payload = json.dumps(frame, ensure_ascii=False, separators=(",", ":"),
                         allow_nan=False).encode("utf-8")
    if len(payload) > max_frame:
        raise FrameTooLarge(f"payload of {len(payload)} bytes is over the {max_frame}-byte limit")
    return HEADER.pack(len(payload)) + payload


def payload_length(header: bytes, max_frame: int = MAX_FRAME) -> int:
    """The payload length a 4-byte header announces; `FrameTooLarge` over `max_frame`."""
    if len(header) != HEADER.size:
        raise ValueError(f"a frame header has {HEADER.size} bytes, not {len(header)}")
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise FrameTooLarge(f"frame announces {length} bytes, over the {max_frame}-byte limit")
    return int(length)


def decode(payload: bytes) -> Dict[str, Any]:
    """The JSON object of one payload; `BadFrame` if it is not UTF-8 JSON or not an object."""
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadFrame(f"payload is not UTF-8 JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadFrame(f"payload is JSON but not an object ({type(value).__name__})")
    return value


class FrameDecoder:
    """Cuts a byte stream into frames, keeping partial frames between reads.

    Bytes are kept until their frame is whole, so a read that returns early (or
    times out) loses nothing: feed whatever arrived, whenever it arrived.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Adds bytes read from the stream."""
        self._buf += data

    def next(self) -> Optional[Dict[str, Any]]:
        """The next whole frame, or None until more bytes are fed.

        `BadFrame`: that frame's payload is not a JSON object; it is consumed, so
        call again for the next one. `FrameTooLarge`: the header is over the limit;
        the stream cannot be resynchronised and every later call raises it again.
        """
        if len(self._buf) < HEADER.size:
            return None
        length = payload_length(bytes(self._buf[:HEADER.size]), self.max_frame)
        end = HEADER.size + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER.size:end])
        del self._buf[:end]
        return decode(payload)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        """Yields the whole frames fed so far (stops at the first error, raising it)."""
        while True:
            frame = self.next()
            if frame is None:
                return
            yield frame

    @property
    def buffered(self) -> int:
        """Bytes held for frames not yet whole."""
        return len(self._buf)
