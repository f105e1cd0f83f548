"""Unit tests of the frame codec (no bus needed)."""

from __future__ import annotations

import json
import struct
import sys
import unittest
from pathlib import Path
from typing import Any, Dict, List


from hookbus import BadFrame, FrameTooLarge, HookbusError  # noqa: E402
from hookbus._frame import (MAX_FRAME, FrameDecoder, decode, encode,  # noqa: E402
                            payload_length)


def raw(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class EncodeTest(unittest.TestCase):
    def test_header_is_big_endian_payload_length(self) -> None:
        data = encode({"type": "ping"})
        self.assertEqual(data[:4], b"\x00\x00\x00\x0f")
        self.assertEqual(data[4:], b'{"type":"ping"}')

    def test_utf8_is_sent_as_is(self) -> None:
        data = encode({"body": "é✓"})
        payload = data[4:]
        self.assertIn("é✓".encode("utf-8"), payload)
        self.assertEqual(struct.unpack(">I", data[:4])[0], len(payload))
        self.assertEqual(json.loads(payload), {"body": "é✓"})

    def test_limit_is_on_the_payload(self) -> None:
        frame = {"b": "x" * 100}
        size = len(encode(frame)) - 4
        self.assertEqual(len(encode(frame, max_frame=size)), size + 4)
        with self.assertRaises(FrameTooLarge) as caught:
            encode(frame, max_frame=size - 1)
        self.assertEqual(caught.exception.code, "frame_too_large")

    def test_default_limit_is_ten_mib(self) -> None:
        self.assertEqual(MAX_FRAME, 10 * 1024 * 1024)
        body = "x" * (MAX_FRAME - len('{"b":""}'))
        self.assertEqual(len(encode({"b": body})), MAX_FRAME + 4)
        with self.assertRaises(FrameTooLarge):
            encode({"b": body + "x"})

    def test_only_objects_and_json(self) -> None:
        with self.assertRaises(TypeError):
            encode([1, 2])  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            encode({"x": float("nan")})
        with self.assertRaises(TypeError):
            encode({"x": object()})


class DecodeTest(unittest.TestCase):
    def test_object(self) -> None:
        self.assertEqual(decode(b'{"type":"pong","n":[1,2]}'), {"type": "pong", "n": [1, 2]})

    def test_refusals(self) -> None:
        for payload in (b"\xff\xfe", b'{"type":', b"[1]", b'"text"', b"", b"{} x"):
            with self.subTest(payload=payload), self.assertRaises(BadFrame) as caught:
                decode(payload)
            self.assertEqual(caught.exception.code, "bad_frame")
            self.assertIsInstance(caught.exception, HookbusError)

    def test_payload_length(self) -> None:
        self.assertEqual(payload_length(b"\x00\x00\x01\x00"), 256)
        self.assertEqual(payload_length(struct.pack(">I", MAX_FRAME)), MAX_FRAME)
        with self.assertRaises(FrameTooLarge):
            payload_length(struct.pack(">I", MAX_FRAME + 1))
        with self.assertRaises(FrameTooLarge):
            payload_length(b"\xff\xff\xff\xff")
        with self.assertRaises(ValueError):
            payload_length(b"\x00\x00")


class FrameDecoderTest(unittest.TestCase):
    def test_frames_split_anywhere_come_out_whole_and_in_order(self) -> None:
        stream = b"".join(encode({"n": i, "s": "é" * i}) for i in range(20))
        for step in (1, 2, 3, 7, 64, len(stream)):
            with self.subTest(step=step):
                decoder = FrameDecoder()
                got: List[Dict[str, Any]] = []
                for at in range(0, len(stream), step):
                    decoder.feed(stream[at:at + step])
                    got.extend(decoder)
                self.assertEqual([f["n"] for f in got], list(range(20)))
                self.assertEqual(got[5]["s"], "ééééé")
                self.assertEqual(decoder.buffered, 0)

    def test_partial_frame_is_kept(self) -> None:
        data = encode({"type": "event", "body": "x" * 1000})
        decoder = FrameDecoder()
        decoder.feed(data[:3])
        self.assertIsNone(decoder.next())
        decoder.feed(data[3:500])
        self.assertIsNone(decoder.next())
        self.assertEqual(decoder.buffered, 500)
        decoder.feed(data[500:])
        frame = decoder.next()
        assert frame is not None
        self.assertEqual(frame["body"], "x" * 1000)
        self.assertIsNone(decoder.next())

    def test_bad_payload_is_skipped(self) -> None:
        decoder = FrameDecoder()
        decoder.feed(raw(b"[1]") + encode({"ok": 1}))
        with self.assertRaises(BadFrame):
            decoder.next()
        self.assertEqual(decoder.next(), {"ok": 1})

    def test_oversized_header_is_refused_before_the_payload_arrives(self) -> None:
        decoder = FrameDecoder(max_frame=16)
        decoder.feed(struct.pack(">I", 17))
        with self.assertRaises(FrameTooLarge):
            decoder.next()
        with self.assertRaises(FrameTooLarge):
            decoder.next()  # the stream cannot be resynchronised

    def test_empty_object_and_zero_length(self) -> None:
        decoder = FrameDecoder()
        decoder.feed(raw(b"{}") + raw(b""))
        self.assertEqual(decoder.next(), {})
        with self.assertRaises(BadFrame):
            decoder.next()
        self.assertIsNone(decoder.next())


if __name__ == "__main__":
    unittest.main()
