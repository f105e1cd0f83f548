//! Protocol 2, features `rpc` and `monitor`, against a live server.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{Raw, TestBus};
use crate::topics::{speaker, subscribe};

/// Reads the next `request` frame a responder gets and answers it with `body`.
async fn answer(responder: &mut Raw, body: Value) -> Value {
    let req = responder.recv().await;
    assert_eq!(req["type"], "request", "{req}");
    responder
        .send(&json!({"type": "reply", "reply_to": req["reply_to"], "body": body}))
        .await;
    req
}

#[tokio::test]
async fn a_request_gets_one_response_with_its_rid() {
    let bus = TestBus::start().await;
    let mut responder = speaker(&bus, &["topics", "rpc"]).await;
    responder
        .send(&json!({"type": "register", "endpoint": "resizer"}))
        .await;
    responder.recv().await;
    let sid = subscribe(&mut responder, "img.*", json!({})).await;
    let mut asker = speaker(&bus, &["rpc"]).await;
    asker
        .send(&json!({"type": "request", "rid": 7, "subject": "img.resize", "body": {"w": 64}}))
        .await;
    let req = answer(&mut responder, json!({"ok": true})).await;
    assert_eq!(
        (req["sid"].as_u64(), req["subject"].as_str()),
        (Some(sid), Some("img.resize"))
    );
    assert_eq!(req["body"], json!({"w": 64}));
    assert!(req["reply_to"].as_str().unwrap().starts_with("$reply."));
    let resp = asker.recv().await;
    assert_eq!(
        (
            resp["type"].clone(),
            resp["rid"].clone(),
            resp["from"].clone(),
            resp["body"].clone()
        ),
        (
            json!("response"),
            json!(7),
            json!("resizer"),
            json!({"ok": true})
        )
    );
    // A second reply to the same request is late: dropped and counted.
    responder
        .send(&json!({"type": "reply", "reply_to": req["reply_to"], "body": 2}))
        .await;
    assert!(asker.sync().await.is_empty());
    // By endpoint, to a responder with rpc: a request frame without sid.
    asker
        .send(&json!({"type": "request", "rid": "b", "to": "resizer", "body": 1}))
        .await;
    let req = answer(&mut responder, json!(2)).await;
    assert!(req.get("sid").is_none(), "{req}");
    assert_eq!(asker.recv().await["body"], 2);
    let status = bus.status().await;
    assert_eq!(status["counters"]["late_replies"], 1);
    assert_eq!(status["topics"]["pending_requests"], 0);
    bus.stop().await;
}

#[tokio::test]
async fn no_responders_is_answered_at_once() {
    let bus = TestBus::start().await;
    let mut asker = speaker(&bus, &["rpc"]).await;
    // A subscriber without rpc is not a responder.
    let mut listener = speaker(&bus, &["topics"]).await;
    subscribe(&mut listener, "svc.>", json!({})).await;
    let started = Instant::now();
    asker
        .send(&json!({"type": "request", "rid": 1, "subject": "svc.x", "timeout_ms": 60000}))
        .await;
    let e = asker.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_i64()),
        (Some("no_responders"), Some(1)),
        "{e}"
    );
    // At once, not at the 60 s timeout (the bound is loose on purpose: the
    // latency itself is measured by `hookbus bench`, not asserted here).
    assert!(started.elapsed() < Duration::from_secs(2));
    asker
        .send(&json!({"type": "request", "rid": 2, "to": "nobody"}))
        .await;
    assert_eq!(asker.recv().await["code"], "no_responders");
    bus.stop().await;
}

#[tokio::test]
async fn a_request_times_out_on_time_and_a_reply_after_it_is_late() {
    let bus = TestBus::start().await;
    let mut responder = speaker(&bus, &["topics", "rpc"]).await;
    subscribe(&mut responder, "slow", json!({})).await;
    let mut asker = speaker(&bus, &["rpc"]).await;
    let started = Instant::now();
    asker
        .send(&json!({"type": "request", "rid": 3, "subject": "slow", "timeout_ms": 300}))
        .await;
    let req = responder.recv().await;
    let e = asker.recv().await;
    let waited = started.elapsed();
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_i64()),
        (Some("timeout"), Some(3)),
        "{e}"
    );
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    responder
        .send(&json!({"type": "reply", "reply_to": req["reply_to"], "body": "too late"}))
        .await;
    assert!(asker.sync().await.is_empty());
    assert_eq!(bus.status().await["counters"]["late_replies"], 1);
    bus.stop().await;
}

#[tokio::test]
async fn a_responder_that_leaves_without_answering_is_reported() {
    let bus = TestBus::start().await;
    let mut responder = speaker(&bus, &["topics", "rpc"]).await;
    subscribe(&mut responder, "fragile", json!({})).await;
    let mut asker = speaker(&bus, &["rpc"]).await;
    asker
        .send(&json!({"type": "request", "rid": 4, "subject": "fragile", "timeout_ms": 60000}))
        .await;
    assert_eq!(responder.recv().await["type"], "request");
    drop(responder);
    let e = asker.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_i64()),
        (Some("responder_gone"), Some(4)),
        "{e}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn gather_collects_several_responses_then_says_how_many() {
    let bus = TestBus::start().await;
    let mut responders = Vec::new();
    for i in 0..3 {
        let mut r = speaker(&bus, &["topics", "rpc"]).await;
        r.send(&json!({"type": "register", "endpoint": format!("r{i}")}))
            .await;
        r.recv().await;
        subscribe(&mut r, "census", json!({})).await;
        responders.push(r);
    }
    let mut asker = speaker(&bus, &["rpc"]).await;
    asker
        .send(&json!({"type": "request", "rid": 5, "subject": "census", "gather": {"max": 10, "window_ms": 2000}}))
        .await;
    for (i, r) in responders.iter_mut().enumerate() {
        answer(r, json!(i)).await;
    }
    let mut from = Vec::new();
    for _ in 0..3 {
        let resp = asker.recv().await;
        assert_eq!(
            (resp["type"].as_str(), resp["rid"].as_i64()),
            (Some("response"), Some(5))
        );
        from.push(resp["from"].as_str().unwrap().to_owned());
    }
    from.sort();
    assert_eq!(from, vec!["r0", "r1", "r2"]);
    // Every responder answered: done before the window ends.
    assert_eq!(
        asker.recv().await,
        json!({"type": "gathered", "rid": 5, "count": 3})
    );
    bus.stop().await;
}

#[tokio::test]
async fn a_hermes_style_endpoint_serves_a_request_through_reply_to() {
    let bus = TestBus::start().await;
    // No hello: it gets a plain message and answers with a message to `reply_to`.
    let mut hermes = bus.registered("legacy").await;
    let mut asker = speaker(&bus, &["rpc"]).await;
    asker
        .send(&json!({"type": "request", "rid": 8, "to": "legacy", "body": "ping?"}))
        .await;
    let m = hermes.recv().await;
    assert_eq!(
        (m["type"].as_str(), m["to"].as_str(), m["body"].as_str()),
        (Some("message"), Some("legacy"), Some("ping?")),
        "{m}"
    );
    hermes
        .send(&json!({"type": "message", "to": m["reply_to"], "body": "pong!"}))
        .await;
    let resp = asker.recv().await;
    assert_eq!(
        (
            resp["rid"].clone(),
            resp["from"].clone(),
            resp["body"].clone()
        ),
        (json!(8), json!("legacy"), json!("pong!"))
    );
    bus.stop().await;
}

#[tokio::test]
async fn only_a_session_the_request_went_to_may_answer_it() {
    let bus = TestBus::start().await;
    let mut responder = speaker(&bus, &["topics", "rpc"]).await;
    subscribe(&mut responder, "guarded", json!({})).await;
    let mut intruder = speaker(&bus, &["rpc"]).await;
    let mut asker = speaker(&bus, &["rpc"]).await;
    asker
        .send(&json!({"type": "request", "rid": 9, "subject": "guarded"}))
        .await;
    let req = responder.recv().await;
    intruder
        .send(&json!({"type": "reply", "reply_to": req["reply_to"], "body": "forged"}))
        .await;
    intruder.sync().await;
    responder
        .send(&json!({"type": "reply", "reply_to": req["reply_to"], "body": "real"}))
        .await;
    assert_eq!(asker.recv().await["body"], "real");
    bus.stop().await;
}

#[tokio::test]
async fn pending_requests_per_connection_are_capped() {
    let bus = TestBus::start().await;
    let mut responder = speaker(&bus, &["topics", "rpc"]).await;
    subscribe(&mut responder, "sink", json!({})).await;
    let mut asker = speaker(&bus, &["rpc"]).await;
    let n = hookbus::router::MAX_PENDING_REQUESTS;
    let reader = tokio::spawn(async move {
        for _ in 0..n {
            responder.recv().await;
        }
        responder
    });
    for rid in 0..=n {
        asker
            .send(&json!({"type": "request", "rid": rid, "subject": "sink", "timeout_ms": 60000}))
            .await;
    }
    let e = asker.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_u64()),
        (Some("too_many_requests"), Some(n as u64)),
        "{e}"
    );
    let _responder = reader.await.unwrap();
    bus.stop().await;
}

#[tokio::test]
async fn a_filter_drop_answers_the_request_and_the_monitor_sees_everything() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n",
    )
    .await;
    let mut monitor = speaker(&bus, &["monitor"]).await;
    monitor.send(&json!({"type": "monitor", "rid": 1})).await;
    let ok = monitor.recv().await;
    assert_eq!(
        (ok["type"].as_str(), ok["rid"].as_i64()),
        (Some("monitoring"), Some(1)),
        "{ok}"
    );
    let mut responder = speaker(&bus, &["topics", "rpc"]).await;
    subscribe(&mut responder, "svc", json!({})).await;
    let mut asker = speaker(&bus, &["rpc", "topics"]).await;
    asker
        .send(&json!({"type": "request", "rid": 2, "subject": "svc", "body": {"probe": "drop"}}))
        .await;
    let e = asker.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_i64()),
        (Some("dropped"), Some(2)),
        "{e}"
    );
    assert!(e["detail"].as_str().unwrap().contains("tagger"), "{e}");
    asker
        .send(&json!({"type": "publish", "subject": "news.x", "body": {"probe": "drop"}}))
        .await;
    asker
        .send(&json!({"type": "publish", "subject": "news.y", "body": 1}))
        .await;
    asker.sync().await;
    let dropped = monitor.recv().await;
    assert_eq!(
        (dropped["kind"].as_str(), dropped["hook"].as_str()),
        (Some("dropped"), Some("tagger")),
        "{dropped}"
    );
    assert_eq!(dropped["frame"]["type"], "request");
    let dropped = monitor.recv().await;
    assert_eq!(dropped["kind"], "dropped");
    assert_eq!(dropped["frame"]["subject"], "news.x");
    let published = monitor.recv().await;
    assert_eq!(
        (published["kind"].as_str(), published["subject"].as_str()),
        (Some("publish"), Some("news.y")),
        "{published}"
    );
    assert_eq!(published["frame"]["body"], 1);
    assert_eq!(monitor.sync().await, Vec::<Value>::new());
    bus.stop().await;
}

#[tokio::test]
async fn a_monitor_filters_by_subject_and_kind_and_never_holds_anyone_back() {
    let bus = TestBus::start_with(|c| c.outbox_capacity = 64).await;
    let mut monitor = speaker(&bus, &["monitor"]).await;
    monitor
        .send(&json!({"type": "monitor", "subject": "a.>", "kinds": ["publish"]}))
        .await;
    let sid = monitor.recv().await["sid"].clone();
    let mut publisher = speaker(&bus, &["topics"]).await;
    publisher
        .send(&json!({"type": "register", "endpoint": "p"}))
        .await;
    publisher.recv().await;
    let mut rx = bus.registered("rx").await;
    let reader = tokio::spawn(async move {
        for i in 0..3000 {
            assert_eq!(rx.recv().await["body"], i);
        }
    });
    // The monitor reads nothing during the burst: nobody waits for it.
    for i in 0..3000 {
        publisher
            .send(&json!({"type": "publish", "subject": format!("a.{}", i % 3), "body": i}))
            .await;
        publisher
            .send(&json!({"type": "publish", "subject": "b.x", "body": i}))
            .await;
        publisher
            .send(&json!({"type": "message", "to": "rx", "body": i}))
            .await;
    }
    publisher.sync().await;
    reader.await.unwrap();
    let seen = monitor.drain().await;
    let copies: Vec<&Value> = seen.iter().filter(|f| f["type"] == "monitored").collect();
    assert!(copies
        .iter()
        .all(|f| f["kind"] == "publish" && f["subject"].as_str().unwrap().starts_with("a.")));
    let missed = crate::topics::missed(&seen, &sid);
    assert_eq!(
        copies.len() as u64 + missed,
        3000,
        "every copy arrived or was counted as missed"
    );
    assert!(missed > 0, "the monitor fell behind");
    assert_eq!(
        bus.status().await["counters"]["slow_consumer_disconnects"],
        0
    );
    bus.stop().await;
}

#[tokio::test]
async fn traceparent_is_carried_from_publish_request_and_reply_to_what_the_bus_builds() {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let bus = TestBus::start().await;
    let mut responder = speaker(&bus, &["topics", "rpc"]).await;
    subscribe(&mut responder, "trace.>", json!({})).await;
    let mut asker = speaker(&bus, &["topics", "rpc"]).await;
    asker
        .send(&json!({"type": "publish", "subject": "trace.pub", "traceparent": tp, "body": 1}))
        .await;
    let event = responder.recv().await;
    assert_eq!(
        (event["type"].as_str(), event["traceparent"].as_str()),
        (Some("event"), Some(tp))
    );
    asker
        .send(&json!({"type": "request", "rid": 1, "subject": "trace.rpc", "traceparent": tp, "body": 2}))
        .await;
    let req = responder.recv().await;
    assert_eq!(req["traceparent"], tp, "{req}");
    let child = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01";
    responder
        .send(
            &json!({"type": "reply", "reply_to": req["reply_to"], "traceparent": child, "body": 3}),
        )
        .await;
    let resp = asker.recv().await;
    assert_eq!(
        (resp["type"].as_str(), resp["traceparent"].as_str()),
        (Some("response"), Some(child))
    );
    // Absent stays absent; anything but a short string is refused by name.
    asker
        .send(&json!({"type": "publish", "subject": "trace.plain", "body": 4}))
        .await;
    assert!(responder.recv().await.get("traceparent").is_none());
    for bad in [json!(7), json!("x".repeat(300))] {
        asker
            .send(&json!({"type": "publish", "subject": "trace.bad", "traceparent": bad}))
            .await;
        let error = asker.recv().await;
        assert_eq!(error["code"], "bad_request", "{error}");
        assert!(
            error["detail"].as_str().unwrap().contains("traceparent"),
            "{error}"
        );
    }
    bus.stop().await;
}
