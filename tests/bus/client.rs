//! The Rust client library: register, send, receive as a Stream, heartbeat,
//! reconnect, autostart, and the one-shot helpers.

use std::time::Duration;

use hookbus::client::{self, Client, ClientOptions, Sent};
use serde_json::json;
use tokio_stream::StreamExt;

use crate::common::{bin, TestBus, WAIT};

fn options(bus: &TestBus, name: &str) -> ClientOptions {
    let mut o = ClientOptions::new(&bus.socket, name);
    o.reconnect_initial = Duration::from_millis(20);
    o.reconnect_max = Duration::from_millis(200);
    o
}

#[tokio::test]
async fn clients_register_send_and_receive_as_a_stream() {
    let bus = TestBus::start().await;
    let mut a = Client::connect(options(&bus, "a")).await.unwrap();
    let b = Client::connect(options(&bus, "b")).await.unwrap();
    assert!(uuid::Uuid::parse_str(&a.session_id()).is_ok());
    b.send("a", json!({"n": 1})).await.unwrap();
    b.send("", json!({"n": 2})).await.unwrap();
    let first = tokio::time::timeout(WAIT, a.next()).await.unwrap().unwrap();
    assert_eq!(
        (first["from"].clone(), first["body"].clone()),
        (json!("b"), json!({"n": 1}))
    );
    let second = tokio::time::timeout(WAIT, a.next()).await.unwrap().unwrap();
    assert_eq!(second["body"], json!({"n": 2}));

    let list = client::endpoints(&bus.socket).await.unwrap();
    assert_eq!(list["a"], json!(a.session_id()));
    bus.stop().await;
}

#[tokio::test]
async fn heartbeat_keeps_a_quiet_client_registered() {
    let bus = TestBus::start_with(|c| c.heartbeat_timeout = Duration::from_millis(300)).await;
    let mut o = options(&bus, "quiet");
    o.heartbeat = Duration::from_millis(50);
    let mut quiet = Client::connect(o).await.unwrap();
    let id = quiet.session_id();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        client::send_message(&bus.socket, "quiet", json!("hi"), "t")
            .await
            .unwrap(),
        Sent::Delivered(1)
    );
    assert_eq!(quiet.recv().await.unwrap()["body"], "hi");
    assert_eq!(
        quiet.session_id(),
        id,
        "the client should not have needed to reconnect"
    );
    assert_eq!(bus.status().await["counters"]["heartbeat_timeouts"], 0);
    bus.stop().await;
}

#[tokio::test]
async fn clients_reconnect_and_re_register_after_the_daemon_restarts() {
    let bus = TestBus::start().await;
    let mut a = Client::connect(options(&bus, "a")).await.unwrap();
    let first_id = a.session_id();
    let (dir, socket) = (bus.dir.path().to_owned(), bus.socket.clone());
    let kept = bus.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = TestBus::start_at(kept, socket.clone(), |_| {});
    assert_eq!(bus.dir.path(), dir);
    // Wait for the client to come back, then talk to it.
    bus.wait_status("the client to re-register", |s| {
        s["endpoints"].get("a").is_some()
    })
    .await;
    client::send_message(&socket, "a", json!("after restart"), "t")
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, a.recv()).await.unwrap().unwrap();
    assert_eq!(got["body"], "after restart");
    assert_ne!(a.session_id(), first_id);
    bus.stop().await;
}

#[tokio::test]
async fn one_shot_send_reports_delivery_and_unknown_endpoints() {
    let bus = TestBus::start().await;
    let _a = bus.registered("a").await;
    let _b = bus.registered("b").await;
    assert_eq!(
        client::send_message(&bus.socket, "a", json!(1), "t")
            .await
            .unwrap(),
        Sent::Delivered(1)
    );
    assert_eq!(
        client::send_message(&bus.socket, "", json!(1), "t")
            .await
            .unwrap(),
        Sent::Delivered(2)
    );
    let err = client::send_message(&bus.socket, "ghost", json!(1), "t")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("endpoint_not_found"));
    bus.stop().await;
}

#[tokio::test]
async fn connect_errors_say_how_to_start_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let err = Client::connect(ClientOptions::new(dir.path().join("none.sock"), "a"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("none.sock") && text.contains("hookbus daemon start"),
        "{text}"
    );
}

#[tokio::test]
async fn autostart_starts_the_daemon_when_none_answers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("auto.sock");
    let mut o = ClientOptions::new(&socket, "auto");
    o.autostart = true;
    o.daemon_program = bin();
    let mut c = Client::connect(o).await.unwrap();
    client::send_message(&socket, "auto", json!("hello"), "t")
        .await
        .unwrap();
    assert_eq!(c.recv().await.unwrap()["body"], "hello");
    let out = std::process::Command::new(bin())
        .args(["daemon", "stop", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn the_protocol_2_client_subscribes_as_a_stream_requests_and_serves() {
    use hookbus::client::{Bus, Target};
    use tokio_stream::StreamExt;
    let bus = TestBus::start().await;
    let publisher = Bus::connect(&bus.socket, Some("pub"), &["topics", "rpc"])
        .await
        .unwrap();
    publisher.publish("cfg.a", json!(1), true).await.unwrap();
    publisher.call(json!({"type": "ping"})).await.unwrap();
    let subscriber = Bus::connect(&bus.socket, None, &["topics", "rpc"])
        .await
        .unwrap();
    // The retained value comes right behind `subscribed`: it is not lost.
    let mut events = subscriber.subscribe("cfg.*", None).await.unwrap();
    publisher.publish("cfg.b", json!(2), false).await.unwrap();
    let first = events.next().await.unwrap();
    assert_eq!(
        (first["retained"].clone(), first["body"].clone()),
        (json!(true), json!(1))
    );
    let second = events.next().await.unwrap();
    assert_eq!(
        (second["from"].clone(), second["body"].clone()),
        (json!("pub"), json!(2))
    );

    let mut requests = subscriber.serve("svc.echo", None).await.unwrap();
    let server = tokio::spawn(async move {
        let req = requests.next().await.unwrap();
        subscriber
            .reply(
                req["reply_to"].as_str().unwrap(),
                json!({"echo": req["body"]}),
            )
            .await
            .unwrap();
        subscriber
    });
    let response = publisher
        .request(
            Target::Subject("svc.echo"),
            json!("hi"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(response["body"], json!({"echo": "hi"}));
    let _subscriber = server.await.unwrap();
    let e = publisher
        .request(
            Target::Subject("svc.none"),
            json!(1),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("no_responders"));
    bus.stop().await;
}
