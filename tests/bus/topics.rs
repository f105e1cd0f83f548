//! Protocol 2, feature `topics`: subjects, queue groups, retained values,
//! interest, wills and the `on_full` policies, against a live server.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{Raw, TestBus};

/// A connection that said `hello` with these features.
pub async fn speaker(bus: &TestBus, features: &[&str]) -> Raw {
    let mut c = Raw::connect(&bus.socket).await;
    c.send(&json!({"type": "hello", "protocol": 2, "features": features}))
        .await;
    let welcome = c.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["protocol"], 2);
    c
}

/// Subscribes and returns the sid.
pub async fn subscribe(c: &mut Raw, pattern: &str, extra: Value) -> u64 {
    let mut req = json!({"type": "subscribe", "rid": pattern, "subject": pattern});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    c.send(&req).await;
    let answer = c.recv().await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(answer["rid"], pattern);
    answer["sid"].as_u64().unwrap()
}

/// What the `gap` frames among `frames` say was missed, in all; each must be
/// about subscription `sid`.
pub fn missed(frames: &[Value], sid: &Value) -> u64 {
    frames
        .iter()
        .filter(|f| f["type"] == "gap")
        .map(|f| {
            assert_eq!(&f["sid"], sid, "{f}");
            f["missed"].as_u64().unwrap()
        })
        .sum()
}

async fn publish(c: &mut Raw, subject: &str, body: Value) {
    c.send(&json!({"type": "publish", "subject": subject, "body": body}))
        .await;
}

#[tokio::test]
async fn wildcards_deliver_once_per_matching_subscription_in_order() {
    let bus = TestBus::start().await;
    let mut sub = speaker(&bus, &["topics"]).await;
    let star = subscribe(&mut sub, "build.*.done", json!({})).await;
    let rest = subscribe(&mut sub, "build.>", json!({})).await;
    let _other = subscribe(&mut sub, "deploy.>", json!({})).await;
    let mut publisher = speaker(&bus, &["topics"]).await;
    publisher
        .send(&json!({"type": "register", "endpoint": "ci"}))
        .await;
    assert_eq!(publisher.recv().await["type"], "registered");
    for i in 0..50 {
        publish(&mut publisher, "build.web.done", json!({"n": i})).await;
    }
    publish(&mut publisher, "build.web", json!("only >")).await;
    publish(&mut publisher, "build", json!("nobody")).await;
    assert!(
        publisher.sync().await.is_empty(),
        "publishes get no answer without acks"
    );
    let mut seen = Vec::new();
    for _ in 0..101 {
        seen.push(sub.recv().await);
    }
    assert!(
        sub.sync().await.is_empty(),
        "nothing more: `build` matches neither"
    );
    let by = |sid: u64| -> Vec<Value> {
        seen.iter()
            .filter(|e| e["sid"] == sid)
            .map(|e| e["body"].clone())
            .collect()
    };
    let expected: Vec<Value> = (0..50).map(|i| json!({"n": i})).collect();
    assert_eq!(by(star), expected, "in publish order");
    let mut with_rest = expected.clone();
    with_rest.push(json!("only >"));
    assert_eq!(by(rest), with_rest);
    let e = &seen[0];
    assert_eq!(e["type"], "event");
    assert_eq!(e["subject"], "build.web.done");
    assert_eq!(e["from"], "ci");
    assert!(e["id"].is_string() && e["ts"].is_number(), "{e}");
    bus.stop().await;
}

#[tokio::test]
async fn frames_of_a_feature_need_it_and_a_plain_client_sees_none() {
    let bus = TestBus::start().await;
    // A hermes-style client: registered, no hello.
    let mut plain = bus.registered("plain").await;
    let mut no_topics = speaker(&bus, &["acks"]).await;
    no_topics
        .send(&json!({"type": "subscribe", "rid": 1, "subject": ">"}))
        .await;
    let e = no_topics.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_i64()),
        (Some("not_negotiated"), Some(1)),
        "{e}"
    );
    assert!(e["detail"].as_str().unwrap().contains("topics"), "{e}");
    let mut sub = speaker(&bus, &["topics"]).await;
    subscribe(&mut sub, ">", json!({})).await;
    let mut publisher = speaker(&bus, &["topics"]).await;
    for i in 0..200 {
        publish(&mut publisher, &format!("t.{i}"), json!(i)).await;
    }
    publisher.sync().await;
    for _ in 0..200 {
        assert_eq!(sub.recv().await["type"], "event");
    }
    assert!(
        plain.sync().await.is_empty(),
        "a client without topics gets no event"
    );
    bus.stop().await;
}

#[tokio::test]
async fn bad_subjects_are_refused_with_the_rule() {
    let bus = TestBus::start().await;
    let mut c = speaker(&bus, &["topics"]).await;
    for (req, words) in [
        (
            json!({"type": "publish", "rid": 1, "subject": "a.*"}),
            "wildcards",
        ),
        (
            json!({"type": "publish", "rid": 2, "subject": "$bus.x"}),
            "reserved",
        ),
        (
            json!({"type": "publish", "rid": 3, "subject": "a..b"}),
            "empty token",
        ),
        (
            json!({"type": "subscribe", "rid": 4, "subject": "a.>.b"}),
            "last token",
        ),
        (
            json!({"type": "subscribe", "rid": 5, "subject": "x.".repeat(200)}),
            "at most",
        ),
    ] {
        c.send(&req).await;
        let e = c.recv().await;
        assert_eq!(e["code"], "bad_subject", "{req} → {e}");
        assert_eq!(e["rid"], req["rid"]);
        assert!(e["detail"].as_str().unwrap().contains(words), "{req} → {e}");
    }
    c.send(&json!({"type": "unsubscribe", "rid": 6, "sid": 99}))
        .await;
    assert_eq!(c.recv().await["code"], "no_such_subscription");
    bus.stop().await;
}

#[tokio::test]
async fn a_dropped_subscriber_is_reported_once_per_subscription_and_the_others_get_everything() {
    let bus = TestBus::start().await;
    let mut watcher = speaker(&bus, &["topics"]).await;
    watcher
        .send(&json!({"type": "interest", "rid": "w", "subject": "quotes.>"}))
        .await;
    let listing = watcher.recv().await;
    assert_eq!(listing["subscriptions"], json!([]), "{listing}");
    let iid = listing["iid"].clone();

    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut s = speaker(&bus, &["topics"]).await;
        subscribe(&mut s, "quotes.*", json!({})).await;
        subscribe(&mut s, "quotes.>", json!({})).await;
        subs.push(s);
    }
    let mut adds = 0;
    for _ in 0..6 {
        let change = watcher.recv().await;
        assert_eq!(
            (change["type"].as_str(), change["is_add"].as_bool()),
            (Some("interest_change"), Some(true)),
            "{change}"
        );
        assert_eq!(change["iid"], iid);
        adds += 1;
    }
    assert_eq!(adds, 6);

    let mut publisher = speaker(&bus, &["topics"]).await;
    let burst: i64 = 2000;
    let victim = subs.remove(1);
    // The others read as the burst goes on.
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..2 * burst {
                    got.push(s.recv().await["body"].as_i64().unwrap());
                }
                (got, s) // still subscribed
            })
        })
        .collect();
    let writer = tokio::spawn(async move {
        for i in 0..burst {
            publish(&mut publisher, "quotes.acme", json!(i)).await;
        }
        publisher.sync().await;
        publisher
    });
    // The victim goes away mid-burst, without a word (as SIGKILL would close it).
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(victim);
    let _publisher = writer.await.unwrap();
    let mut alive = Vec::new();
    for reader in readers {
        let (got, s) = reader.await.unwrap();
        alive.push(s);
        let mut each: Vec<i64> = got.iter().step_by(2).copied().collect();
        each.dedup();
        assert_eq!(got.len(), 2 * burst as usize);
        assert_eq!(
            each,
            (0..burst).collect::<Vec<i64>>(),
            "every event, in order, twice"
        );
    }
    let mut removed = Vec::new();
    for _ in 0..2 {
        let change = watcher.recv().await;
        assert_eq!(change["is_add"], false, "{change}");
        removed.push(change["subject"].as_str().unwrap().to_owned());
    }
    removed.sort();
    assert_eq!(removed, vec!["quotes.*", "quotes.>"]);
    assert!(
        watcher.sync().await.is_empty(),
        "exactly one is_add:false per lost subscription"
    );
    bus.stop().await;
}

#[tokio::test]
async fn a_queue_group_delivers_each_publish_to_one_live_member() {
    let bus = TestBus::start().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut m = speaker(&bus, &["topics"]).await;
        subscribe(&mut m, "jobs.>", json!({"queue": "workers"})).await;
        members.push(m);
    }
    let mut outsider = speaker(&bus, &["topics"]).await;
    subscribe(&mut outsider, "jobs.>", json!({})).await;
    let mut publisher = speaker(&bus, &["topics"]).await;
    for i in 0..300 {
        publish(&mut publisher, "jobs.build", json!(i)).await;
    }
    publisher.sync().await;
    // One member leaves; what follows goes to the other two only.
    let gone = members.remove(0);
    let mut gone_got = HashSet::new();
    let mut gone = gone;
    for e in gone.sync().await {
        gone_got.insert(e["body"].as_i64().unwrap());
    }
    drop(gone);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 300..600 {
        publish(&mut publisher, "jobs.build", json!(i)).await;
    }
    publisher.sync().await;
    let mut all = gone_got.clone();
    for m in &mut members {
        for e in m.sync().await {
            let n = e["body"].as_i64().unwrap();
            assert!(all.insert(n), "{n} went to two members of the group");
        }
    }
    assert_eq!(all.len(), 600, "each publish reached exactly one member");
    assert!(gone_got.iter().all(|&n| n < 300));
    assert!(!gone_got.is_empty(), "members take turns");
    assert_eq!(
        outsider.sync().await.len(),
        600,
        "a subscriber outside the group gets every one"
    );
    bus.stop().await;
}

#[tokio::test]
async fn retained_values_come_before_live_events_and_null_clears_them() {
    let bus = TestBus::start().await;
    let mut publisher = speaker(&bus, &["topics"]).await;
    for (subject, body) in [
        ("cfg.a", json!(1)),
        ("cfg.b", json!(2)),
        ("cfg.a", json!(3)),
    ] {
        publisher
            .send(&json!({"type": "publish", "subject": subject, "body": body, "retain": true}))
            .await;
    }
    publisher
        .send(&json!({"type": "publish", "subject": "cfg.c", "body": 9, "retain": true}))
        .await;
    publisher
        .send(&json!({"type": "publish", "subject": "cfg.c", "body": null, "retain": true}))
        .await;
    publisher.sync().await;
    let mut late = speaker(&bus, &["topics"]).await;
    late.send(&json!({"type": "subscribe", "rid": 1, "subject": "cfg.*"}))
        .await;
    assert_eq!(late.recv().await["type"], "subscribed");
    let mut retained: Vec<(String, Value)> = Vec::new();
    for _ in 0..2 {
        let e = late.recv().await;
        assert_eq!(e["retained"], true, "{e}");
        retained.push((e["subject"].as_str().unwrap().into(), e["body"].clone()));
    }
    retained.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        retained,
        vec![("cfg.a".into(), json!(3)), ("cfg.b".into(), json!(2))]
    );
    publish(&mut publisher, "cfg.a", json!(4)).await;
    let live = late.recv().await;
    assert_eq!(
        (live["body"].clone(), live.get("retained")),
        (json!(4), None)
    );
    assert!(late.sync().await.is_empty(), "cfg.c was cleared");
    bus.stop().await;
}

#[tokio::test]
async fn a_will_is_published_when_a_session_drops_and_not_after_bye() {
    let bus = TestBus::start().await;
    let mut watcher = speaker(&bus, &["topics"]).await;
    subscribe(&mut watcher, "agents.*.gone", json!({})).await;
    let mut dying = Raw::connect(&bus.socket).await;
    dying
        .send(
            &json!({"type": "hello", "protocol": 2, "features": ["topics"],
                      "will": {"subject": "agents.editor.gone", "body": {"pid": 42}}}),
        )
        .await;
    assert_eq!(dying.recv().await["type"], "welcome");
    dying
        .send(&json!({"type": "register", "endpoint": "editor"}))
        .await;
    dying.recv().await;
    drop(dying);
    let will = watcher.recv().await;
    assert_eq!(
        (
            will["subject"].clone(),
            will["from"].clone(),
            will["body"].clone()
        ),
        (
            json!("agents.editor.gone"),
            json!("editor"),
            json!({"pid": 42})
        )
    );
    let mut polite = Raw::connect(&bus.socket).await;
    polite
        .send(
            &json!({"type": "hello", "protocol": 2, "features": ["topics"],
                      "will": {"subject": "agents.polite.gone", "body": 1}}),
        )
        .await;
    polite.recv().await;
    polite.send(&json!({"type": "bye", "rid": 1})).await;
    assert_eq!(polite.recv().await, json!({"type": "bye", "rid": 1}));
    drop(polite);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(watcher.sync().await.is_empty(), "no will after bye");
    bus.stop().await;
}

#[tokio::test]
async fn a_drop_subscriber_that_stalls_gets_a_gap_and_holds_nobody_back() {
    let bus = TestBus::start_with(|c| {
        c.outbox_capacity = 64;
    })
    .await;
    // It subscribes, then reads nothing while the burst goes on.
    let mut stalled = speaker(&bus, &["topics"]).await;
    let sid = subscribe(&mut stalled, "ticks", json!({"on_full": "drop"})).await;
    let mut healthy = speaker(&bus, &["topics"]).await;
    subscribe(&mut healthy, "ticks", json!({})).await;
    let mut publisher = speaker(&bus, &["topics"]).await;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 5000 {
            assert_eq!(healthy.recv().await["body"], n);
            n += 1;
        }
        healthy
    });
    for i in 0..5000 {
        publish(&mut publisher, "ticks", json!(i)).await;
    }
    publisher.sync().await;
    reader.await.unwrap();
    // Now it reads: what it got, then a gap saying how many it missed.
    let frames = stalled.drain().await;
    let events = frames.iter().filter(|f| f["type"] == "event").count() as u64;
    assert!(frames.iter().any(|f| f["type"] == "gap"), "a gap frame");
    let missed = missed(&frames, &json!(sid));
    assert_eq!(
        events + missed,
        5000,
        "every event arrived or was counted missed"
    );
    assert!(events < 5000);
    let status = bus.status().await;
    assert_eq!(status["counters"]["events_dropped"], missed);
    assert_eq!(status["counters"]["slow_consumer_disconnects"], 0);
    bus.stop().await;
}

#[tokio::test]
async fn a_disconnect_subscriber_that_falls_behind_is_cut() {
    let bus = TestBus::start_with(|c| {
        c.outbox_capacity = 64;
    })
    .await;
    let mut stalled = speaker(&bus, &["topics"]).await;
    subscribe(&mut stalled, "ticks", json!({"on_full": "disconnect"})).await;
    let mut publisher = speaker(&bus, &["topics"]).await;
    for i in 0..1000 {
        publish(&mut publisher, "ticks", json!(i)).await;
    }
    publisher.sync().await;
    let rest = stalled.until_eof().await;
    let last = rest.last().unwrap();
    assert_eq!(last["code"], "slow_consumer", "{last}");
    assert!(last["detail"]
        .as_str()
        .unwrap()
        .contains("disconnected when it cannot keep up"));
    bus.stop().await;
}

#[tokio::test]
async fn a_publish_fanned_out_past_half_the_budget_cuts_its_subscriber_at_once() {
    let bus = TestBus::start_with(|c| {
        c.memory_budget = 16 << 20;
        c.max_frame_len = 1 << 20;
    })
    .await;
    let mut greedy = speaker(&bus, &["topics"]).await;
    for _ in 0..100 {
        greedy
            .send(&json!({"type": "subscribe", "subject": "x"}))
            .await;
    }
    assert_eq!(greedy.sync().await.len(), 100);
    let mut healthy = speaker(&bus, &["topics"]).await;
    subscribe(&mut healthy, "x", json!({})).await;
    let mut publisher = speaker(&bus, &["topics"]).await;
    // 100 copies of 512 KiB: 50 MiB for one subscriber, over three budgets.
    publish(&mut publisher, "x", json!("y".repeat(512 * 1024))).await;
    assert!(publisher.sync().await.is_empty());
    let e = healthy.recv().await;
    assert_eq!(e["body"].as_str().map(str::len), Some(512 * 1024));
    let rest = greedy.until_eof().await;
    let last = rest.last().unwrap();
    assert_eq!(last["code"], "slow_consumer", "{last}");
    assert!(rest.len() < 100, "cut before its copies were all queued");
    let status = bus
        .wait_status("the budget given back", |s| {
            s["memory"]["used"].as_u64().unwrap() < 64
        })
        .await;
    assert_eq!(status["counters"]["slow_consumer_disconnects"], 1);
    bus.stop().await;
}

#[tokio::test]
async fn drop_subscribers_and_monitors_that_stop_reading_are_not_cut() {
    let bus = TestBus::start_with(|c| {
        c.outbox_capacity = 64;
        c.slow_consumer_timeout = Duration::from_millis(300);
    })
    .await;
    let mut dropper = speaker(&bus, &["topics"]).await;
    let sid = subscribe(&mut dropper, "t", json!({"on_full": "drop"})).await;
    let mut monitor = speaker(&bus, &["monitor"]).await;
    monitor.send(&json!({"type": "monitor"})).await;
    monitor.recv().await;
    let mut publisher = speaker(&bus, &["topics"]).await;
    // They read nothing for well over the slow-consumer timeout.
    for round in 0..10 {
        for i in 0..200 {
            publish(&mut publisher, "t", json!(round * 200 + i)).await;
        }
        publisher.sync().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = dropper.drain().await;
    let events = got.iter().filter(|f| f["type"] == "event").count() as u64;
    let missed = missed(&got, &json!(sid));
    assert_eq!(
        events + missed,
        2000,
        "every event arrived or was counted as missed"
    );
    assert!(missed > 0);
    assert!(monitor.drain().await.iter().any(|f| f["type"] == "gap"));
    assert_eq!(
        bus.status().await["counters"]["slow_consumer_disconnects"],
        0
    );
    bus.stop().await;
}

#[tokio::test]
async fn a_hello_without_topics_ends_subscriptions_and_a_will_is_a_short_notice() {
    let bus = TestBus::start().await;
    let mut c = speaker(&bus, &["topics"]).await;
    subscribe(&mut c, "t", json!({})).await;
    c.send(&json!({"type": "hello", "protocol": 2, "features": []}))
        .await;
    assert_eq!(c.recv().await["type"], "welcome");
    let mut publisher = speaker(&bus, &["topics"]).await;
    publish(&mut publisher, "t", json!(1)).await;
    publisher.sync().await;
    assert!(
        c.sync().await.is_empty(),
        "no events after topics was dropped"
    );
    assert_eq!(bus.status().await["topics"]["subscriptions"], 0);
    let big = "x".repeat(hookbus::protocol::hello::MAX_WILL_BODY);
    c.send(
        &json!({"type": "hello", "protocol": 2, "features": ["topics"],
                   "will": {"subject": "gone", "body": big}}),
    )
    .await;
    let e = c.recv().await;
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(e["detail"].as_str().unwrap().contains("will"), "{e}");
    bus.stop().await;
}

#[tokio::test]
async fn filter_hooks_match_on_subject_and_run_once_per_publish() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: guard\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    match: { subject: \"secret.>\" }\n",
    )
    .await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut s = speaker(&bus, &["topics"]).await;
        subscribe(&mut s, ">", json!({})).await;
        subs.push(s);
    }
    let mut publisher = speaker(&bus, &["topics"]).await;
    // The probe drops bodies {"probe":"drop"}: only where the hook matches.
    publish(&mut publisher, "secret.key", json!({"probe": "drop"})).await;
    publish(&mut publisher, "public.key", json!({"probe": "drop"})).await;
    publish(&mut publisher, "secret.other", json!({"n": 1})).await;
    publisher.sync().await;
    for s in &mut subs {
        let got: Vec<Value> = s.sync().await;
        let subjects: Vec<&str> = got.iter().map(|e| e["subject"].as_str().unwrap()).collect();
        assert_eq!(subjects, ["public.key", "secret.other"]);
    }
    let status = bus.hooks_status().await;
    let guard = crate::hooks::hook(&status, "guard");
    assert_eq!(
        guard["calls"], 2,
        "once per matching publish, not per subscriber: {guard}"
    );
    assert_eq!(guard["drops"], 1);
    bus.stop().await;
}

#[tokio::test]
async fn retained_values_and_their_clearing_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let bus = TestBus::with_store(state.path(), hookbus::store::SyncPolicy::Full).await;
    let mut p = speaker(&bus, &["topics"]).await;
    for (subject, body) in [
        ("cfg.theme", json!("dark")),
        ("cfg.font", json!(12)),
        ("cfg.gone", json!(1)),
    ] {
        p.send(&json!({"type": "publish", "subject": subject, "body": body, "retain": true}))
            .await;
    }
    p.send(&json!({"type": "publish", "subject": "cfg.gone", "body": null, "retain": true}))
        .await;
    // Once the bus has handled them, they are queued to the store, which
    // commits what it was given before a graceful stop ends.
    p.sync().await;
    drop(p);
    bus.stop().await;
    let bus = TestBus::with_store(state.path(), hookbus::store::SyncPolicy::Full).await;
    let mut s = speaker(&bus, &["topics"]).await;
    subscribe(&mut s, "cfg.>", json!({})).await;
    let mut got: Vec<(String, Value)> = s
        .sync()
        .await
        .into_iter()
        .map(|e| {
            assert_eq!(e["retained"], true, "{e}");
            (e["subject"].as_str().unwrap().to_owned(), e["body"].clone())
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("cfg.font".to_owned(), json!(12)),
            ("cfg.theme".to_owned(), json!("dark"))
        ]
    );
    bus.stop().await;
}
