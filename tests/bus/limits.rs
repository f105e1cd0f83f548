//! Limits that hold on the way out (issue 9, item 4): nothing is delivered over
//! the frame limit the bus advertises, and nesting no client can parse is refused.

use serde_json::json;

use crate::common::TestBus;

#[tokio::test]
async fn a_message_at_the_limit_without_id_and_ts_is_refused_not_delivered_oversize() {
    const LIMIT: usize = 4096;
    let bus = TestBus::start_with(|c| c.max_frame_len = LIMIT).await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    let head = r#"{"type":"message","to":"rx","body":""#;
    let pad = "x".repeat(LIMIT - head.len() - 2);
    let text = format!(r#"{head}{pad}"}}"#);
    assert_eq!(text.len(), LIMIT);
    tx.send_payload(text.as_bytes()).await;
    let reply = tx.recv().await;
    assert_eq!(reply["code"], "frame_too_large", "{reply}");
    assert!(
        reply["id"].is_string(),
        "the refusal names the message: {reply}"
    );
    // The connection stays usable, and nothing reached the receiver.
    assert!(tx.sync().await.is_empty());
    assert!(rx.sync().await.is_empty());
    bus.stop().await;
}

#[tokio::test]
async fn json_nested_deeper_than_the_limit_is_refused() {
    let bus = TestBus::start().await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    let deep = format!(
        r#"{{"type":"message","to":"rx","body":{}0{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    tx.send_payload(deep.as_bytes()).await;
    let reply = tx.recv().await;
    assert_eq!(reply["code"], "bad_frame", "{reply}");
    tx.send(&json!({"type": "message", "to": "rx", "body": [[[1]]]}))
        .await;
    assert!(tx.sync().await.is_empty());
    assert_eq!(
        rx.recv().await["body"],
        json!([[[1]]]),
        "shallow nesting passes"
    );
    bus.stop().await;
}
