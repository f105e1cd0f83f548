//! Section 2 of the core issue: the hermes-bus 0.7 protocol and its extensions.

use std::time::Duration;

use serde_json::json;

use crate::common::TestBus;

#[tokio::test]
async fn register_answers_with_endpoint_and_session_id() {
    let bus = TestBus::start().await;
    let mut a = bus.raw().await;
    a.send(&json!({"type": "register", "endpoint": "alice"}))
        .await;
    let reply = a.recv().await;
    assert_eq!(reply["type"], "registered");
    assert_eq!(reply["endpoint"], "alice");
    assert!(
        uuid::Uuid::parse_str(reply["session_id"].as_str().unwrap()).is_ok(),
        "{reply}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn re_registering_a_name_replaces_and_closes_the_old_session() {
    let bus = TestBus::start().await;
    let mut old = bus.registered("alice").await;
    let mut new = bus.raw().await;
    new.send(&json!({"type": "register", "endpoint": "alice"}))
        .await;
    let reply = new.recv().await;
    let new_id = reply["session_id"].as_str().unwrap().to_owned();

    let rest = old.until_eof().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["code"], "replaced");

    new.send(&json!({"type": "list_endpoints"})).await;
    let list = new.recv().await;
    assert_eq!(
        list,
        json!({"type": "endpoints_list", "endpoints": {"alice": new_id}})
    );

    let mut sender = bus.raw().await;
    sender
        .send(&json!({"type": "message", "to": "alice", "body": 1}))
        .await;
    assert_eq!(new.recv().await["body"], 1);
    assert!(sender.sync().await.is_empty());
    bus.stop().await;
}

#[tokio::test]
async fn ping_answers_pong() {
    let bus = TestBus::start().await;
    let mut anon = bus.raw().await;
    anon.send(&json!({"type": "ping"})).await;
    assert_eq!(anon.recv().await, json!({"type": "pong"}));
    bus.stop().await;
}

#[tokio::test]
async fn messages_keep_every_field_and_get_id_and_ts_when_absent() {
    let bus = TestBus::start().await;
    let mut bob = bus.registered("bob").await;
    let mut anon = bus.raw().await;
    let body = json!({"text": "héllo ✓", "nested": {"list": [1, 2.5, null, true]}});
    anon.send(
        &json!({"type": "message", "to": "bob", "from": "x", "body": body, "custom": "kept"}),
    )
    .await;
    let got = bob.recv().await;
    assert_eq!(got["body"], body);
    assert_eq!(got["custom"], "kept");
    assert_eq!(got["from"], "x");
    assert_eq!(got["to"], "bob");
    assert!(
        uuid::Uuid::parse_str(got["id"].as_str().unwrap()).is_ok(),
        "{got}"
    );
    let ts = got["ts"].as_f64().unwrap();
    let now = hookbus::protocol::unix_now();
    assert!((now - ts).abs() < 60.0, "ts {ts} vs now {now}");

    anon.send(&json!({"type": "message", "to": "bob", "id": "mine", "ts": 12.5}))
        .await;
    let got = bob.recv().await;
    assert_eq!(
        (got["id"].clone(), got["ts"].clone()),
        (json!("mine"), json!(12.5))
    );
    bus.stop().await;
}

#[tokio::test]
async fn missing_or_empty_to_broadcasts_to_every_registered_session() {
    let bus = TestBus::start().await;
    let mut a = bus.registered("a").await;
    let mut b = bus.registered("b").await;
    let mut anon = bus.raw().await;
    anon.send(&json!({"type": "message", "body": "one"})).await;
    a.send(&json!({"type": "message", "to": "", "from": "a", "body": "two"}))
        .await;
    for rx in [&mut a, &mut b] {
        assert_eq!(rx.recv().await["body"], "one");
        assert_eq!(rx.recv().await["body"], "two");
    }
    // Anonymous connections are not subscribers.
    assert!(anon.sync().await.is_empty());
    bus.stop().await;
}

#[tokio::test]
async fn unknown_endpoint_errors_for_anonymous_senders_only_unless_asked() {
    let bus = TestBus::start().await;
    let mut anon = bus.raw().await;
    anon.send(&json!({"type": "message", "to": "ghost", "id": "m1"}))
        .await;
    let error = anon.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "endpoint_not_found");
    assert_eq!(error["id"], "m1");
    assert!(error["detail"].as_str().unwrap().contains("ghost"));

    // hermes-bus behaviour: a registered sender is not told (the loss is counted).
    let mut reg = bus.registered("reg").await;
    reg.send(&json!({"type": "message", "to": "ghost", "id": "m2"}))
        .await;
    assert!(reg.sync().await.is_empty());
    assert_eq!(bus.status().await["counters"]["undeliverable"], 2);

    // With the `errors` feature it is.
    let mut opted = bus.raw().await;
    opted
        .send(&json!({"type": "hello", "protocol": 1, "features": ["errors"]}))
        .await;
    assert_eq!(opted.recv().await["features"], json!(["errors"]));
    opted
        .send(&json!({"type": "register", "endpoint": "opted"}))
        .await;
    assert_eq!(opted.recv().await["type"], "registered");
    opted
        .send(&json!({"type": "message", "to": "ghost", "id": "m3"}))
        .await;
    let error = opted.recv().await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("endpoint_not_found"), json!("m3"))
    );
    bus.stop().await;
}

#[tokio::test]
async fn list_endpoints_maps_names_to_session_ids() {
    let bus = TestBus::start().await;
    let mut a = bus.raw().await;
    a.send(&json!({"type": "register", "endpoint": "a"})).await;
    let a_id = a.recv().await["session_id"].clone();
    let _b = bus.registered("b").await;
    let mut anon = bus.raw().await;
    anon.send(&json!({"type": "list_endpoints"})).await;
    let list = anon.recv().await;
    assert_eq!(list["type"], "endpoints_list");
    assert_eq!(list["endpoints"]["a"], a_id);
    assert_eq!(list["endpoints"].as_object().unwrap().len(), 2);
    drop(a);
    bus.wait_status("a's session to close", |s| {
        s["endpoints"].as_object().unwrap().len() == 1
    })
    .await;
    bus.stop().await;
}

#[tokio::test]
async fn hello_negotiates_features_and_acks_report_deliveries() {
    let bus = TestBus::start_with(|c| c.max_frame_len = 4096).await;
    let _a = bus.registered("a").await;
    let _b = bus.registered("b").await;
    let mut c = bus.raw().await;
    c.send(&json!({"type": "hello", "protocol": 1, "features": ["acks", "from-the-future"]}))
        .await;
    let welcome = c.recv().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["protocol"], hookbus::protocol::PROTOCOL_VERSION);
    assert_eq!(welcome["features"], json!(["acks"]));
    assert_eq!(welcome["max_frame"], 4096);
    c.send(&json!({"type": "message", "to": "a", "id": "x"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "id": "x", "delivered": 1})
    );
    c.send(&json!({"type": "message", "id": "y"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "id": "y", "delivered": 2})
    );
    bus.stop().await;
}

#[tokio::test]
async fn registering_twice_on_one_connection_is_an_error() {
    let bus = TestBus::start().await;
    let mut a = bus.registered("a").await;
    a.send(&json!({"type": "register", "endpoint": "b"})).await;
    let error = a.recv().await;
    assert_eq!(error["code"], "already_registered");
    assert!(a.sync().await.is_empty());
    bus.stop().await;
}

#[tokio::test]
async fn silent_registered_sessions_time_out_and_pinging_ones_stay() {
    let bus = TestBus::start_with(|c| c.heartbeat_timeout = Duration::from_millis(300)).await;
    let mut silent = bus.registered("silent").await;
    let mut alive = bus.registered("alive").await;
    let anon = bus.raw().await;
    let started = std::time::Instant::now();
    let pinger = async {
        while started.elapsed() < Duration::from_millis(1200) {
            alive.send(&json!({"type": "ping"})).await;
            assert_eq!(alive.recv().await["type"], "pong");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (rest, ()) = tokio::join!(silent.until_eof(), pinger);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["code"], "heartbeat_timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "closed too early: {elapsed:?}"
    );

    let status = bus.status().await;
    assert_eq!(
        status["endpoints"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["alive"]
    );
    // The silent registered session, and the silent anonymous one (see limits.rs).
    assert_eq!(status["counters"]["heartbeat_timeouts"], 2);
    drop(anon);
    bus.stop().await;
}

#[tokio::test]
async fn status_names_each_sessions_peer_from_the_kernel() {
    let bus = TestBus::start().await;
    let _me = bus.registered("me").await;
    let status = bus.status().await;
    let sessions = status["sessions"].as_array().unwrap();
    // This connection, and the one asking for the status.
    assert_eq!(sessions.len(), 2, "{status}");
    let me = sessions.iter().find(|s| s["endpoint"] == "me").unwrap();
    assert_eq!(me["id"], status["endpoints"]["me"]);
    assert_eq!(me["uid"], nix::unistd::geteuid().as_raw());
    assert_eq!(me["gid"], nix::unistd::getegid().as_raw());
    assert_eq!(me["pid"], std::process::id());
    assert_eq!(
        me["exe"].as_str().map(std::path::PathBuf::from),
        std::env::current_exe().ok()
    );
    bus.stop().await;
}
