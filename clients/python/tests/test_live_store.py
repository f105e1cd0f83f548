"""Integration tests of the KV and jobs against a live hookbus daemon with a store.

Point HOOKBUS_SOCKET at its socket (the daemon keeps its store in its state
directory unless started with `--no-store`):

    hookbus --socket /tmp/hb/bus.sock daemon start --sync normal
    HOOKBUS_SOCKET=/tmp/hb/bus.sock python3 -m unittest discover -s tests -v

Without HOOKBUS_SOCKET the whole module is skipped. Every test uses keys and
goals of its own, so a daemon others use is fine.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import unittest
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional


import hookbus  # noqa: E402
from hookbus import Client  # noqa: E402
from hookbus.aio import connect  # noqa: E402

SOCKET = os.environ.get("HOOKBUS_SOCKET")


def setUpModule() -> None:
    if not SOCKET:
        raise unittest.SkipTest(
            "HOOKBUS_SOCKET is not set: start a hookbus daemon with a store and set "
            "HOOKBUS_SOCKET to its socket to run the live KV and jobs tests")


def changes(watch: hookbus.KvWatch, quiet: float = 0.3) -> List[Dict[str, Any]]:
    """Every frame that arrives until none has for `quiet` seconds."""
    frames: List[Dict[str, Any]] = []
    while True:
        frame = watch.next(quiet)
        if frame is None:
            return frames
        frames.append(frame)


def summary(frames: List[Dict[str, Any]]) -> List[Any]:
    """`kv_change` frames as (op, key, value), and `kv_synced` as the string."""
    return [(f["op"], f["key"], f.get("value")) if f["type"] == "kv_change" else f["type"]
            for f in frames]


class StoreTest(unittest.TestCase):
    """Base: a fresh prefix for keys and goals, and clients closed after each test."""

    def setUp(self) -> None:
        self.path = SOCKET
        self.prefix = "t" + uuid.uuid4().hex[:10]

    def client(self, **kwargs: Any) -> Client:
        c = Client(self.path, **kwargs)
        self.addCleanup(c.close)
        return c

    def key(self, rest: str) -> str:
        return f"{self.prefix}.{rest}"


class KvTest(StoreTest):
    def test_put_get_compare_and_set_delete_keys(self) -> None:
        c = self.client()
        self.assertIn("kv", c.features)
        first = c.kv_put(self.key("cfg.theme"), {"name": "dark"})
        self.assertIsInstance(first, int)
        got = c.kv_get(self.key("cfg.theme"))
        assert got is not None
        self.assertEqual((got["type"], got["key"], got["value"], got["revision"]),
                         ("kv_value", self.key("cfg.theme"), {"name": "dark"}, first))
        self.assertNotIn("expires_at_ms", got)
        self.assertIsNone(c.kv_get(self.key("cfg.nothing")))

        with self.assertRaises(hookbus.RevisionMismatch) as caught:  # create only: it exists
            c.kv_put(self.key("cfg.theme"), "light", if_revision=0)
        self.assertEqual(caught.exception.code, "revision_mismatch")
        self.assertEqual(caught.exception.revision, first)
        with self.assertRaises(hookbus.RevisionMismatch) as caught:
            c.kv_put(self.key("cfg.theme"), "light", if_revision=first + 1000)
        self.assertEqual(caught.exception.revision, first)
        second = c.kv_put(self.key("cfg.theme"), "light", if_revision=first)
        self.assertGreater(second, first)
        with self.assertRaises(hookbus.RevisionMismatch) as caught:  # absent: revision 0
            c.kv_put(self.key("cfg.font"), 12, if_revision=5)
        self.assertEqual(caught.exception.revision, 0)
        created = c.kv_put(self.key("cfg.font"), 12, if_revision=0)
        self.assertGreater(created, second)
        c.kv_put(self.key("other"), None)  # null is a value like any other
        null = c.kv_get(self.key("other"))
        assert null is not None
        self.assertIsNone(null["value"])

        self.assertEqual(c.kv_keys(self.key("cfg.")),
                         [self.key("cfg.font"), self.key("cfg.theme")])
        everything = c.kv_keys(self.prefix)
        self.assertEqual(everything, sorted(everything))
        self.assertEqual(len(everything), 3)
        self.assertFalse(everything.more)

        with self.assertRaises(hookbus.RevisionMismatch) as caught:
            c.kv_delete(self.key("cfg.theme"), if_revision=first)
        self.assertEqual(caught.exception.revision, second)
        deleted = c.kv_delete(self.key("cfg.theme"), if_revision=second)
        self.assertGreater(deleted, created)
        self.assertIsNone(c.kv_get(self.key("cfg.theme")))
        with self.assertRaises(hookbus.NotFound):
            c.kv_delete(self.key("cfg.theme"))
        self.assertEqual(c.kv_keys(self.key("cfg.")), [self.key("cfg.font")])

    def test_another_client_reads_the_write(self) -> None:
        writer, reader = self.client(), self.client()
        revision = writer.kv_put(self.key("shared"), [1, 2, 3])
        got = reader.kv_get(self.key("shared"))
        assert got is not None
        self.assertEqual((got["value"], got["revision"]), ([1, 2, 3], revision))

    def test_watch_sends_snapshot_then_synced_then_changes(self) -> None:
        writer = self.client()
        a = writer.kv_put(self.key("svc.a"), 1)
        writer.kv_put(self.key("svc.b"), {"up": True})
        writer.kv_put(self.key("elsewhere"), 0)
        watch = self.client().kv_watch(self.key("svc.*"))
        self.assertIsNotNone(watch.wid)
        self.assertEqual(summary(changes(watch)),
                         [("put", self.key("svc.a"), 1), ("put", self.key("svc.b"), {"up": True}),
                          "kv_synced"])

        c = writer.kv_put(self.key("svc.c"), "new")
        writer.kv_put(self.key("elsewhere"), 1)  # not matched
        writer.kv_put(self.key("svc.deep.x"), 1)  # `*` is one token
        d = writer.kv_delete(self.key("svc.a"))
        live = changes(watch)
        self.assertEqual(summary(live), [("put", self.key("svc.c"), "new"),
                                         ("delete", self.key("svc.a"), None)])
        self.assertEqual([f["revision"] for f in live], [c, d])
        self.assertGreater(c, a)
        self.assertTrue(all(f["wid"] == watch.wid for f in live))

        watch.close()
        writer.kv_put(self.key("svc.e"), 1)
        self.assertEqual(list(watch), [])
        with self.assertRaises(hookbus.Closed):
            watch.next(0.1)
        watch.close()  # a second close does nothing

    def test_watch_without_snapshot_and_as_context_manager(self) -> None:
        c = self.client()
        c.kv_put(self.key("x"), 1)
        with c.kv_watch(self.key(">"), snapshot=False) as watch:
            first = watch.next(2)
            assert first is not None
            self.assertEqual(first["type"], "kv_synced")
            c.kv_put(self.key("x"), 2)
            change = watch.next(2)
            assert change is not None
            self.assertEqual((change["op"], change["key"], change["value"]),
                             ("put", self.key("x"), 2))
        self.assertTrue(watch.ended)

    def test_ttl_expiry_is_seen_by_a_watcher(self) -> None:
        c = self.client()
        watch = c.kv_watch(self.key("session.*"))
        synced = watch.next(2)
        assert synced is not None
        self.assertEqual(synced["type"], "kv_synced")
        start_ms = time.time() * 1000
        c.kv_put(self.key("session.1"), "token", ttl=0.5)
        got = c.kv_get(self.key("session.1"))
        assert got is not None
        self.assertGreater(got["expires_at_ms"], start_ms)
        put = watch.next(2)
        assert put is not None
        self.assertEqual((put["op"], put["expires_at_ms"]), ("put", got["expires_at_ms"]))
        expired = watch.next(5)  # "within about a second" of the TTL
        assert expired is not None, "no expire change"
        self.assertEqual((expired["op"], expired["key"]), ("expire", self.key("session.1")))
        self.assertNotIn("value", expired)
        self.assertGreater(expired["revision"], put["revision"])
        self.assertIsNone(c.kv_get(self.key("session.1")))
        self.assertEqual(c.kv_keys(self.key("session.")), [])

    def test_bad_keys_and_arguments(self) -> None:
        c = self.client()
        with self.assertRaises(hookbus.BadKey) as caught:
            c.kv_put(self.key("a.*"), 1)
        self.assertEqual(caught.exception.code, "bad_key")
        with self.assertRaises(hookbus.BadKey):
            c.kv_watch(self.key("a.>.b"))
        with self.assertRaises(ValueError):
            c.kv_put(self.key("a"), 1, ttl=0)
        with self.assertRaises(ValueError):
            c.kv_put(self.key("a"), 1, if_revision=-1)
        self.assertEqual(c.kv_keys(self.prefix), [])

    def test_kv_needs_the_feature(self) -> None:
        c = self.client(features=("topics",))
        self.assertNotIn("kv", c.features)
        with self.assertRaises(hookbus.NotNegotiated):
            c.kv_get(self.key("a"))
        with self.assertRaises(hookbus.NotNegotiated):
            c.job_claim(self.key("a"))


class JobsTest(StoreTest):
    def test_publish_claim_fulfil(self) -> None:
        producer, worker = self.client(), self.client()
        self.assertIn("jobs", producer.features)
        job_id, duplicate = producer.job_publish(self.key("img.resize"), {"w": 64})
        self.assertIsInstance(job_id, str)
        self.assertFalse(duplicate)
        info = producer.job_status(job_id)
        self.assertEqual((info["type"], info["state"], info["goal"], info["payload"],
                          info["attempt"]),
                         ("job_info", "queued", self.key("img.resize"), {"w": 64}, 0))

        job = worker.job_claim(self.key("img.>"), lease=30)
        assert job is not None
        self.assertEqual((job["type"], job["job"], job["goal"], job["payload"], job["attempt"]),
                         ("job", job_id, self.key("img.resize"), {"w": 64}, 1))
        self.assertIsInstance(job["lease"], str)
        self.assertEqual(producer.job_status(job_id)["state"], "leased")
        until = worker.job_extend(job, duration=60)
        self.assertGreater(until, job["lease_until_ms"])
        worker.job_fulfill(job, result={"w": 32})
        info = producer.job_status(job_id)
        self.assertEqual((info["state"], info["result"]), ("done", {"w": 32}))
        self.assertIn("finished_ms", info)

        self.assertIsNone(worker.job_claim(self.key("img.>")))
        start = time.monotonic()
        self.assertIsNone(worker.job_claim(self.key("img.>"), wait=0.4))
        self.assertGreaterEqual(time.monotonic() - start, 0.35)
        with self.assertRaises(hookbus.NotFound):
            producer.job_status(str(uuid.uuid4()))

    def test_claim_waits_for_a_publish(self) -> None:
        producer = self.client()
        worker = self.client(timeout=1.0)  # the wait is added to the call's own timeout
        got: List[Optional[Dict[str, Any]]] = []
        thread = threading.Thread(
            target=lambda: got.append(worker.job_claim(self.key("later"), wait=4.0)))
        thread.start()
        time.sleep(1.5)
        job_id, _ = producer.job_publish(self.key("later"), "payload")
        thread.join(5)
        self.assertEqual(len(got), 1)
        job = got[0]
        assert job is not None
        self.assertEqual((job["job"], job["payload"]), (job_id, "payload"))
        worker.job_fulfill(job["job"], job["lease"])  # an id and a lease token work too

    def test_priority_then_age_and_job_list(self) -> None:
        c = self.client()
        low, _ = c.job_publish(self.key("q.a"), 1)
        high, _ = c.job_publish(self.key("q.b"), 2, priority=5)
        later, _ = c.job_publish(self.key("q.c"), 3, delay=30)
        listed = c.job_list(goal=self.key("q.>"))
        self.assertEqual([j["job"] for j in listed], [low, high, later])
        self.assertEqual([j["job"] for j in c.job_list(goal=self.key("q.>"), limit=2)],
                         [low, high])
        self.assertIn("ready_at_ms", listed[2])
        first = c.job_claim(self.key("q.>"), lease=10)
        second = c.job_claim(self.key("q.>"), lease=10)
        assert first is not None and second is not None
        self.assertEqual((first["job"], second["job"]), (high, low))
        self.assertIsNone(c.job_claim(self.key("q.>")), "the delayed job is not ready")
        self.assertEqual([j["job"] for j in c.job_list(state="leased", goal=self.key("q.>"))],
                         [low, high])
        c.job_cancel(later)
        self.assertEqual(c.job_status(later)["state"], "cancelled")

    def test_idempotent_publish_duplicate_and_conflict(self) -> None:
        c = self.client()
        key = f"{self.prefix}-order-17"
        job_id, duplicate = c.job_publish(self.key("ship"), {"order": 17}, idempotency_key=key)
        self.assertFalse(duplicate)
        again, duplicate = c.job_publish(self.key("ship"), {"order": 17}, idempotency_key=key)
        self.assertEqual((again, duplicate), (job_id, True))
        with self.assertRaises(hookbus.IdempotencyConflict) as caught:
            c.job_publish(self.key("ship"), {"order": 18}, idempotency_key=key)
        self.assertEqual(caught.exception.code, "idempotency_conflict")
        self.assertEqual(len(c.job_list(goal=self.key("ship"))), 1)

    def test_stale_lease_is_lost(self) -> None:
        producer, slow, fast = self.client(), self.client(), self.client()
        job_id, _ = producer.job_publish(self.key("work"), "x", backoff=0.01)
        first = slow.job_claim(self.key("work"), lease=0.3)
        assert first is not None
        self.assertEqual(first["attempt"], 1)
        time.sleep(0.5)  # the lease ends: the job is queued again
        second = fast.job_claim(self.key("work"), lease=30, wait=5)
        assert second is not None, "the expired job was not queued again"
        self.assertEqual((second["job"], second["attempt"]), (job_id, 2))
        self.assertNotEqual(second["lease"], first["lease"])
        with self.assertRaises(hookbus.LeaseLost) as caught:
            slow.job_fulfill(first, result="late")
        self.assertEqual(caught.exception.code, "lease_lost")
        with self.assertRaises(hookbus.LeaseLost):
            slow.job_extend(first)
        with self.assertRaises(hookbus.LeaseLost):
            slow.job_fail(first, error="late")
        fast.job_fulfill(second, result="on time")
        info = producer.job_status(job_id)
        self.assertEqual((info["state"], info["result"], info["attempt"]), ("done", "on time", 2))

    def test_failures_end_dead_and_retry_revives(self) -> None:
        c = self.client()
        goal = self.key("flaky")
        dead_events = c.subscribe(f"$jobs.{goal}.dead")
        job_id, _ = c.job_publish(goal, {"n": 1}, max_attempts=2, backoff=0.01)

        job = c.job_claim(goal)
        assert job is not None
        failed = c.job_fail(job, error="boom")
        self.assertEqual((failed["type"], failed["job"], failed["state"]),
                         ("job_failed", job_id, "queued"))
        self.assertIsInstance(failed["ready_at_ms"], int)
        job = c.job_claim(goal, wait=3)
        assert job is not None
        self.assertEqual(job["attempt"], 2)
        failed = c.job_fail(job, error="boom again")
        self.assertEqual(failed["state"], "dead")
        info = c.job_status(job_id)
        self.assertEqual((info["state"], info["attempt"], info["error"]),
                         ("dead", 2, "boom again"))
        self.assertIsNone(c.job_claim(goal, wait=0.2))
        event = dead_events.next(2)
        assert event is not None
        self.assertEqual(event["body"], {"job": job_id, "goal": goal, "attempt": 2,
                                         "error": "boom again"})
        self.assertIn(job_id, [j["job"] for j in c.job_list(state="dead", goal=goal)])

        c.job_retry(job_id)
        self.assertEqual(c.job_status(job_id)["state"], "queued")
        job = c.job_claim(goal)
        assert job is not None
        self.assertEqual(job["attempt"], 1)
        self.assertEqual(c.job_fail(job, error="give up", retry=False)["state"], "dead")
        c.job_cancel(job_id)
        self.assertEqual(c.job_status(job_id)["state"], "cancelled")
        with self.assertRaises(hookbus.BadRequest):
            c.job_cancel(job_id)  # cancelled already
        c.job_retry(job_id)
        job = c.job_claim(goal)
        assert job is not None
        c.job_fulfill(job)
        self.assertEqual(c.job_status(job_id)["state"], "done")

    def test_a_closed_connection_gives_its_leases_back(self) -> None:
        producer = self.client()
        job_id, _ = producer.job_publish(self.key("held"), 1, backoff=0.01)
        holder = Client(self.path)
        job = holder.job_claim(self.key("held"), lease=60)
        assert job is not None
        holder.close()
        again = producer.job_claim(self.key("held"), wait=3)
        assert again is not None, "the lease of a closed connection was not given back"
        self.assertEqual((again["job"], again["attempt"]), (job_id, 2))
        producer.job_fulfill(again)

    def test_bad_arguments(self) -> None:
        c = self.client()
        with self.assertRaises(hookbus.BadSubject):
            c.job_publish(self.key("a.*"))
        with self.assertRaises(ValueError):
            c.job_claim(self.key("a"), lease=0)
        with self.assertRaises(ValueError):
            c.job_claim(self.key("a"), wait=301)
        with self.assertRaises(TypeError):
            c.job_fulfill("some-id")  # no lease
        with self.assertRaises(hookbus.BadRequest):
            c.job_publish(self.key("a"), max_attempts=0)


class AsyncStoreTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        self.path = SOCKET
        self.prefix = "t" + uuid.uuid4().hex[:10]

    async def test_async_kv_put_get_watch(self) -> None:
        async with await connect(self.path) as a, await connect(self.path) as b:
            key = f"{self.prefix}.cfg"
            first = await a.kv_put(key, {"v": 1})
            got = await b.kv_get(key)
            assert got is not None
            self.assertEqual((got["value"], got["revision"]), ({"v": 1}, first))
            self.assertIsNone(await b.kv_get(f"{self.prefix}.none"))
            with self.assertRaises(hookbus.RevisionMismatch) as caught:
                await b.kv_put(key, {"v": 2}, if_revision=0)
            self.assertEqual(caught.exception.revision, first)
            self.assertEqual(await a.kv_keys(self.prefix), [key])

            watch = await b.kv_watch(f"{self.prefix}.>")
            seen = []
            async for frame in watch:
                seen.append(frame)
                if frame["type"] == "kv_synced":
                    break
            self.assertEqual([(f["type"], f.get("value")) for f in seen],
                             [("kv_change", {"v": 1}), ("kv_synced", None)])
            second = await a.kv_put(key, {"v": 2}, if_revision=first)
            gone = await a.kv_delete(key)
            put, deleted = await watch.next(2), await watch.next(2)
            assert put is not None and deleted is not None
            self.assertEqual((put["op"], put["value"], put["revision"]), ("put", {"v": 2}, second))
            self.assertEqual((deleted["op"], deleted["revision"]), ("delete", gone))
            await watch.close()
            self.assertEqual([f async for f in watch], [])
            with self.assertRaises(hookbus.NotFound):
                await a.kv_delete(key)

    async def test_async_job_cycle(self) -> None:
        async with await connect(self.path) as producer, await connect(self.path) as worker:
            goal = f"{self.prefix}.mail.send"
            job_id, duplicate = await producer.job_publish(goal, {"to": "ed"}, backoff=0.01)
            self.assertFalse(duplicate)
            job = await worker.job_claim(f"{self.prefix}.mail.*", lease=0.3, wait=1)
            assert job is not None
            self.assertEqual((job["job"], job["payload"], job["attempt"]),
                             (job_id, {"to": "ed"}, 1))
            self.assertGreater(await worker.job_extend(job, duration=30), job["lease_until_ms"])
            failed = await worker.job_fail(job, error="smtp down")
            self.assertEqual(failed["state"], "queued")
            job = await worker.job_claim(goal, wait=3)
            assert job is not None
            self.assertEqual(job["attempt"], 2)
            await worker.job_fulfill(job, result="sent")
            with self.assertRaises(hookbus.LeaseLost):
                await worker.job_fulfill(job)
            info = await producer.job_status(job_id)
            self.assertEqual((info["state"], info["result"]), ("done", "sent"))
            self.assertEqual([j["job"] for j in await producer.job_list(goal=goal)], [job_id])
            self.assertIsNone(await worker.job_claim(goal, wait=0.2))
            other, _ = await producer.job_publish(goal)
            await producer.job_cancel(other)
            await producer.job_retry(other)
            self.assertEqual((await producer.job_status(other))["state"], "queued")
            await producer.job_cancel(other)
