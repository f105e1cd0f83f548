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

/// `hookbus serve` with hooks off and at most `fds` open files (soft and hard).
fn serve_with_fd_limit(socket: &std::path::Path, fds: u64) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(crate::common::bin());
    cmd.args(["serve", "--socket"])
        .arg(socket)
        .env("HOOKBUS_HOOKS", "none")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, fds, fds)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().unwrap()
}

#[tokio::test]
async fn past_the_descriptor_limit_every_client_is_served_or_answered() {
    const CLIENTS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let daemon = crate::common::Daemon(serve_with_fd_limit(&socket, 200));
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    while hookbus::daemon::query_status(&socket).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut clients = Vec::new();
    let (mut served, mut refused) = (0, 0);
    let ping = hookbus::frame::encode(br#"{"type":"ping"}"#);
    for _ in 0..CLIENTS {
        let mut c = crate::common::Raw::connect(&socket).await;
        // A refused client may find the connection closed already: the answer
        // waits for it all the same.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, &ping).await;
        // Each gets an answer at once: a pong, or the refusal and the close.
        match c.try_recv().await {
            Some(m) if m["type"] == "pong" => served += 1,
            Some(m) if m["code"] == "too_many_connections" => refused += 1,
            other => panic!("client got {other:?}"),
        }
        clients.push(c);
    }
    assert_eq!(served + refused, CLIENTS);
    assert!(
        refused > 0 && served > 100,
        "{served} served, {refused} refused"
    );
    drop(clients);
    // Once clients leave, new ones are served again.
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    loop {
        let mut c = crate::common::Raw::connect(&socket).await;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, &ping).await;
        if c.try_recv().await.is_some_and(|m| m["type"] == "pong") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not served after clients left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(daemon);
}

#[tokio::test]
async fn a_client_stalled_inside_a_frame_is_closed_with_frame_timeout() {
    let bus =
        TestBus::start_with(|c| c.frame_timeout = std::time::Duration::from_millis(300)).await;
    let mut stalled = bus.raw().await;
    // A header that promises 1 MB, then ten bytes, then nothing.
    stalled.send_bytes(&1_000_000u32.to_be_bytes()).await;
    stalled.send_bytes(br#"{"type":"m"#).await;
    let rest = stalled.until_eof().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["code"], "frame_timeout");
    // A client that keeps sending whole frames for longer is never cut.
    let mut steady = bus.raw().await;
    for _ in 0..8 {
        steady.send(&json!({"type": "ping"})).await;
        assert_eq!(steady.recv().await["type"], "pong");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bus.stop().await;
}

#[tokio::test]
async fn a_silent_anonymous_connection_is_closed() {
    let bus =
        TestBus::start_with(|c| c.heartbeat_timeout = std::time::Duration::from_millis(300)).await;
    let mut silent = bus.raw().await;
    let rest = silent.until_eof().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["code"], "heartbeat_timeout");
    assert!(rest[0]["detail"].as_str().unwrap().contains("anonymous"));
    bus.stop().await;
}
