"""Unit tests of errors, paths, request frames and frame routing (no bus needed)."""

from __future__ import annotations

import os
import queue
import sys
import unittest
from pathlib import Path
from typing import Any, Dict, List
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hookbus  # noqa: E402
from hookbus import _common as C  # noqa: E402
from hookbus._core import END, Call, Router  # noqa: E402
from hookbus.client import Subscription, _Stream  # noqa: E402


class ErrorsTest(unittest.TestCase):
    def test_each_code_has_its_class(self) -> None:
        cases = {
            "no_responders": hookbus.NoResponders, "timeout": hookbus.Timeout,
            "responder_gone": hookbus.ResponderGone, "dropped": hookbus.Dropped,
            "not_negotiated": hookbus.NotNegotiated, "bad_subject": hookbus.BadSubject,
            "endpoint_not_found": hookbus.EndpointNotFound, "shutting_down": hookbus.ShuttingDown,
            "too_many_requests": hookbus.TooManyRequests, "retained_full": hookbus.RetainedFull,
        }
        for code, cls in cases.items():
            with self.subTest(code=code):
                frame = {"type": "error", "code": code, "detail": "why", "rid": 4}
                error = hookbus.error_from_frame(frame)
                self.assertIs(type(error), cls)
                self.assertEqual((error.code, error.detail, error.frame), (code, "why", frame))
                self.assertEqual(str(error), f"{code}: why")

    def test_unknown_code_keeps_its_code(self) -> None:
        error = hookbus.error_from_frame({"type": "error", "code": "new_thing"})
        self.assertIs(type(error), hookbus.HookbusError)
        self.assertEqual((error.code, error.detail), ("new_thing", ""))

    def test_timeout_is_a_timeout_error(self) -> None:
        self.assertTrue(issubclass(hookbus.Timeout, TimeoutError))
        self.assertEqual(hookbus.Timeout("local").code, "timeout")


class SocketPathTest(unittest.TestCase):
    def test_order_of_precedence(self) -> None:
        with mock.patch.dict(os.environ, {"HOOKBUS_SOCKET": "/x/bus.sock",
                                          "XDG_RUNTIME_DIR": "/run/user/7"}):
            self.assertEqual(C.default_socket_path(), "/x/bus.sock")
        with mock.patch.dict(os.environ, {"HOOKBUS_SOCKET": "", "XDG_RUNTIME_DIR": "/run/user/7"}):
            self.assertEqual(C.default_socket_path(), "/run/user/7/hookbus/bus.sock")
        with mock.patch.dict(os.environ, {"HOOKBUS_SOCKET": "", "XDG_RUNTIME_DIR": "",
                                          "HOME": "/home/u"}):
            self.assertEqual(C.default_socket_path(), "/home/u/.hookbus/bus.sock")


class RequestFramesTest(unittest.TestCase):
    def test_hello_with_will(self) -> None:
        frame = C.hello_frame(["topics"], {"subject": "a.gone", "body": {"pid": 1}})
        self.assertEqual(frame, {"type": "hello", "protocol": 2, "features": ["topics"],
                                 "will": {"subject": "a.gone", "body": {"pid": 1},
                                          "retain": False}})
        with self.assertRaises(ValueError):
            C.hello_frame([], {"body": 1})

    def test_request_and_gather(self) -> None:
        self.assertEqual(C.request_frame("img.resize", None, {"w": 64}, 5.0),
                         {"type": "request", "subject": "img.resize", "body": {"w": 64},
                          "timeout_ms": 5000})
        self.assertEqual(C.request_frame(None, "resizer", 1, 0.25)["to"], "resizer")
        for subject, to in ((None, None), ("a", "b")):
            with self.assertRaises(ValueError):
                C.request_frame(subject, to, 1, 1.0)
        for bad in (0, -1, 300.001):
            with self.assertRaises(ValueError):
                C.request_frame("a", None, 1, bad)
        frame = C.gather_frame("a.b", None, 3, 0.5, None)
        self.assertEqual((frame["gather"], frame["timeout_ms"]),
                         ({"max": 3, "window_ms": 500}, 500))
        with self.assertRaises(ValueError):
            C.gather_frame("a.b", None, 1025, 0.5, None)

    def test_subscribe_and_monitor(self) -> None:
        self.assertEqual(C.subscribe_frame("a.*", "q", "drop"),
                         {"type": "subscribe", "subject": "a.*", "queue": "q", "on_full": "drop"})
        self.assertNotIn("queue", C.subscribe_frame("a", None, "pause"))
        with self.assertRaises(ValueError):
            C.subscribe_frame("a", None, "block")
        self.assertEqual(C.monitor_frame(None, ("publish",)),
                         {"type": "monitor", "kinds": ["publish"]})

    def test_message_and_reply_to(self) -> None:
        frame = C.message_frame("ed", {"x": 1}, None)
        self.assertEqual((frame["to"], frame["from"], frame["body"]), ("ed", "anonymous", {"x": 1}))
        self.assertTrue(frame["id"] and frame["ts"] > 1.7e9)
        self.assertEqual(C.reply_to_of({"reply_to": "$reply.3"}), "$reply.3")
        self.assertEqual(C.reply_to_of("$reply.4"), "$reply.4")
        with self.assertRaises(hookbus.BadRequest):
            C.reply_to_of({"type": "message"})

    def test_require(self) -> None:
        C.require(["topics"], "publish")
        C.require([], "ping")
        with self.assertRaises(hookbus.NotNegotiated) as caught:
            C.require(["topics"], "request")
        self.assertIn("rpc", caught.exception.detail)


class FakeRouter(Router):
    _messages: _Stream

    def __init__(self) -> None:
        super().__init__()
        self._messages = _Stream()

    def call(self, rid: Any, frame: Dict[str, Any], multi: bool = False) -> "queue.Queue[Any]":
        call = Call(queue.Queue(), frame, None, multi)
        self._add_call(rid, call)
        answers: "queue.Queue[Any]" = call.answers
        return answers


class RouterTest(unittest.TestCase):
    def test_answers_go_by_rid(self) -> None:
        r = FakeRouter()
        r._legacy = False
        first, second = r.call(1, {"type": "ping"}), r.call(2, {"type": "status"})
        r._dispatch({"type": "status", "rid": 2})
        r._dispatch({"type": "pong", "rid": 1})
        self.assertEqual(first.get_nowait(), {"type": "pong", "rid": 1})
        self.assertEqual(second.get_nowait(), {"type": "status", "rid": 2})
        self.assertEqual(r._pending, {})

    def test_a_message_carrying_rid_is_still_a_message(self) -> None:
        r = FakeRouter()
        waiting = r.call(1, {"type": "ping"})
        r._dispatch({"type": "message", "rid": 1, "body": "x"})
        self.assertTrue(waiting.empty())
        message = r._messages.next(0)
        assert message is not None
        self.assertEqual(message["body"], "x")

    def test_gather_keeps_its_call_until_the_end(self) -> None:
        r = FakeRouter()
        answers = r.call(5, {"type": "request"}, multi=True)
        r._dispatch({"type": "response", "rid": 5, "body": 1})
        r._dispatch({"type": "response", "rid": 5, "body": 2})
        r._dispatch({"type": "gathered", "rid": 5, "count": 2})
        got = [answers.get_nowait() for _ in range(3)]
        self.assertEqual([a["type"] for a in got], ["response", "response", "gathered"])
        self.assertEqual(r._gather_result(got)[0], got[:2])
        self.assertNotIn(5, r._pending)

    def test_events_gaps_and_subscription_install(self) -> None:
        r = FakeRouter()
        sub = Subscription(mock.Mock(), "a.*", None)
        r._sub_installer(sub)({"type": "subscribed", "rid": 1, "sid": 3})
        self.assertEqual(sub.sid, 3)
        r._dispatch({"type": "event", "sid": 3, "subject": "a.b", "body": 1})
        r._dispatch({"type": "gap", "sid": 3, "missed": 4})
        r._dispatch({"type": "event", "sid": 9, "subject": "a.b", "body": 2})  # unknown sid
        event = sub.next(0)
        assert event is not None
        self.assertEqual(event["body"], 1)
        self.assertIsNone(sub.next(0))
        self.assertEqual(sub.missed, 4)

    def test_protocol_1_answers_without_rid_match_the_oldest_call_of_their_type(self) -> None:
        r = FakeRouter()
        status, ping = r.call(1, {"type": "status"}), r.call(2, {"type": "ping"})
        r._dispatch({"type": "pong"})
        r._dispatch({"type": "status", "pid": 1})
        self.assertEqual(ping.get_nowait(), {"type": "pong"})
        self.assertEqual(status.get_nowait()["pid"], 1)
        r._welcomed({"type": "welcome", "protocol": 2})
        other = r.call(3, {"type": "ping"})
        r._dispatch({"type": "pong"})  # a heartbeat's answer: not this call's
        self.assertTrue(other.empty())

    def test_unsolicited_errors(self) -> None:
        r = FakeRouter()
        r._welcomed({"type": "welcome", "protocol": 2})
        r._dispatch({"type": "error", "code": "retained_full", "detail": "full"})
        self.assertIsInstance(r.errors[-1], hookbus.RetainedFull)
        r._dispatch({"type": "error", "code": "shutting_down", "detail": "bye"})
        r._disconnected(None)
        with self.assertRaises(hookbus.ShuttingDown):
            r._messages.next(0)

    def test_disconnect_wakes_calls_and_ends_streams(self) -> None:
        r = FakeRouter()
        waiting = r.call(1, {"type": "ping"})
        sub = Subscription(mock.Mock(), "a", None)
        r._sub_installer(sub)({"type": "subscribed", "sid": 1})
        r._dispatch({"type": "event", "sid": 1, "body": "last"})
        r._disconnected(None)
        self.assertIs(waiting.get_nowait(), END)
        self.assertEqual([e["body"] for e in _take(sub)], ["last"])
        with self.assertRaises(hookbus.Closed) as caught:
            sub.next(0)
        self.assertIn("bus closed", caught.exception.detail)
        with self.assertRaises(hookbus.Closed):
            r._add_call(2, Call(queue.Queue(), {"type": "ping"}, None, False))


def _take(sub: Subscription) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    while True:
        try:
            frame = sub.next(0)
        except hookbus.HookbusError:
            return out
        if frame is None:
            return out
        out.append(frame)


if __name__ == "__main__":
    unittest.main()
