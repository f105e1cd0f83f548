"""Unit tests of errors, paths, request frames and frame routing (no bus needed)."""

from __future__ import annotations

import os
import queue
import sys
import unittest
from pathlib import Path
from typing import Any, Dict, List
from unittest import mock


import hookbus  # noqa: E402
from hookbus import _common as C  # noqa: E402
from hookbus._core import END, Call, Router  # noqa: E402
from hookbus.client import KvWatch, Subscription, _Stream  # noqa: E402


class ErrorsTest(unittest.TestCase):
    def test_each_code_has_its_class(self) -> None:
        cases = {
            "no_responders": hookbus.NoResponders, "timeout": hookbus.Timeout,
            "responder_gone": hookbus.ResponderGone, "dropped": hookbus.Dropped,
            "not_negotiated": hookbus.NotNegotiated, "bad_subject": hookbus.BadSubject,
            "endpoint_not_found": hookbus.EndpointNotFound, "shutting_down": hookbus.ShuttingDown,
            "too_many_requests": hookbus.TooManyRequests, "retained_full": hookbus.RetainedFull,
            "storage_unavailable": hookbus.StorageUnavailable, "not_found": hookbus.NotFound,
            "bad_key": hookbus.BadKey, "value_too_large": hookbus.ValueTooLarge,
            "kv_full": hookbus.KvFull, "lease_lost": hookbus.LeaseLost,
            "idempotency_conflict": hookbus.IdempotencyConflict,
            "snapshot_too_large": hookbus.SnapshotTooLarge,
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

    def test_revision_mismatch_carries_the_current_revision(self) -> None:
        frame = {"type": "error", "code": "revision_mismatch", "detail": "at 7", "revision": 7}
        error = hookbus.error_from_frame(frame)
        self.assertIsInstance(error, hookbus.RevisionMismatch)
        self.assertEqual(error.revision, 7)
        self.assertEqual(type(error)(error.detail, code=error.code, frame=error.frame).revision, 7)
        self.assertIsNone(hookbus.RevisionMismatch("local").revision)
        self.assertEqual(hookbus.RevisionMismatch("local", revision=0).revision, 0)

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
        for kind, feature in (("kv_watch", "kv"), ("job_claim", "jobs")):
            C.require([feature], kind)
            with self.assertRaises(hookbus.NotNegotiated):
                C.require(["topics", "rpc"], kind)
        self.assertIn("kv", C.DEFAULT_FEATURES)
        self.assertIn("jobs", C.DEFAULT_FEATURES)

    def test_kv_frames(self) -> None:
        self.assertEqual(C.kv_put_frame("a.b", {"x": 1}, None, None),
                         {"type": "kv_put", "key": "a.b", "value": {"x": 1}})
        self.assertEqual(C.kv_put_frame("a", None, 1.5, 0),
                         {"type": "kv_put", "key": "a", "value": None, "ttl_s": 1.5,
                          "if_revision": 0})
        for ttl in (0, -1, float("nan"), float("inf"), True):
            with self.assertRaises(ValueError):
                C.kv_put_frame("a", 1, ttl, None)
        for revision in (-1, 1.5, True):
            with self.assertRaises(ValueError):
                C.kv_delete_frame("a", revision)  # type: ignore[arg-type]
        self.assertEqual(C.kv_delete_frame("a", 3),
                         {"type": "kv_delete", "key": "a", "if_revision": 3})
        keys = C.key_list({"type": "kv_key_list", "keys": ["a", "b"], "more": True})
        self.assertEqual((keys, keys.more), (["a", "b"], True))

    def test_job_frames(self) -> None:
        self.assertEqual(C.job_publish_frame("img.resize", None, None, 0, None, None, None),
                         {"type": "job_publish", "goal": "img.resize", "payload": None})
        self.assertEqual(C.job_publish_frame("g", 1, "k", 2, 0.5, 4, 0.01),
                         {"type": "job_publish", "goal": "g", "payload": 1,
                          "idempotency_key": "k", "priority": 2, "delay_ms": 500,
                          "max_attempts": 4, "backoff_ms": 10})
        self.assertEqual(C.job_claim_frame("img.>", 0.3, 0),
                         {"type": "job_claim", "goal": "img.>", "lease_ms": 300, "wait_ms": 0})
        for lease, wait in ((0, 1), (0.0001, 1), (1, -1), (1, 300.001), (float("nan"), 1)):
            with self.assertRaises(ValueError):
                C.job_claim_frame("a", lease, wait)
        claimed = {"type": "job", "job": "J", "lease": "L"}
        self.assertEqual(C.job_lease_frame("job_fulfill", claimed, None),
                         {"type": "job_fulfill", "job": "J", "lease": "L"})
        self.assertEqual(C.job_lease_frame("job_fail", "J", "M"),
                         {"type": "job_fail", "job": "J", "lease": "M"})
        with self.assertRaises(TypeError):
            C.job_lease_frame("job_fulfill", "J", None)
        with self.assertRaises(TypeError):
            C.job_lease_frame("job_fulfill", claimed, {"result": 1})  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            C.job_id(7)
        self.assertEqual(C.job_list_frame("dead", "a.>", 5),
                         {"type": "job_list", "state": "dead", "goal": "a.>", "limit": 5})
        self.assertEqual(C.job_list_frame(None, None, None), {"type": "job_list"})

    def test_kv_frames_are_routed_by_wid(self) -> None:
        self.assertEqual(C.classify({"type": "kv_change", "wid": 2, "op": "put"}), (C.WID, 2))
        self.assertEqual(C.classify({"type": "kv_synced", "wid": 2}), (C.WID, 2))
        self.assertEqual(C.classify({"type": "kv_unwatched", "wid": 2, "reason": "slow"}),
                         (C.WID, 2))
        self.assertEqual(C.classify({"type": "kv_unwatched", "wid": 2, "rid": 9}), (C.ANSWER, 9))
        self.assertEqual(C.classify({"type": "kv_watching", "wid": 2, "rid": 8}), (C.ANSWER, 8))
        self.assertEqual(C.classify({"type": "job", "job": "J", "rid": 3}), (C.ANSWER, 3))


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

    def test_kv_watch_install_changes_and_loss(self) -> None:
        r = FakeRouter()
        r._welcomed({"type": "welcome", "protocol": 2})
        watch = KvWatch(mock.Mock(), "cfg.>")
        r._watch_installer(watch)({"type": "kv_watching", "rid": 1, "wid": 4})
        self.assertEqual(watch.wid, 4)
        r._dispatch({"type": "kv_change", "wid": 4, "op": "put", "key": "cfg.a", "value": 1,
                     "revision": 2})
        r._dispatch({"type": "kv_synced", "wid": 4})
        r._dispatch({"type": "kv_change", "wid": 5, "op": "put", "key": "x", "revision": 3})
        r._dispatch({"type": "kv_unwatched", "wid": 4, "reason": "the watcher fell behind"})
        self.assertEqual([f["type"] for f in _take(watch)], ["kv_change", "kv_synced"])
        with self.assertRaises(hookbus.WatchLost) as caught:
            watch.next(0)
        self.assertIsInstance(caught.exception, hookbus.Closed)
        self.assertIn("fell behind", caught.exception.detail)
        with self.assertRaises(hookbus.WatchLost):
            list(watch)  # a lost watch is not an orderly end
        self.assertEqual(r._watches, {})

    def test_disconnect_ends_kv_watches(self) -> None:
        r = FakeRouter()
        watch = KvWatch(mock.Mock(), "a")
        r._watch_installer(watch)({"type": "kv_watching", "rid": 1, "wid": 1})
        r._dispatch({"type": "kv_synced", "wid": 1})
        r._disconnected(None)
        self.assertEqual([f["type"] for f in _take(watch)], ["kv_synced"])
        with self.assertRaises(hookbus.Closed):
            watch.next(0)
        self.assertEqual(r._watches, {})

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
