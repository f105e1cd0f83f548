//! What the bus tells clients when it stops, and what a client does when another
//! connection takes its name (issue 9, items 5 and 6).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, TestBus, WAIT};

#[tokio::test]
async fn every_client_that_said_hello_hears_shutting_down_before_its_connection_closes() {
    let bus = TestBus::start().await;
    let mut registered = bus.registered("a").await;
    registered
        .send(&serde_json::json!({"type": "hello", "protocol": 1, "features": []}))
        .await;
    assert_eq!(registered.recv().await["type"], "welcome");
    let mut anonymous = bus.raw().await;
    anonymous.hello_acks().await;
    // A hermes-bus client (no hello) sees the close only, as with hermes-bus.
    let mut hermes = bus.registered("h").await;
    let stopping = tokio::spawn(bus.stop());
    assert!(hermes.until_eof().await.is_empty());
    for client in [&mut registered, &mut anonymous] {
        let rest = client.until_eof().await;
        let last = rest.last().expect("a notice before the close");
        assert_eq!(
            (last["type"].as_str(), last["code"].as_str()),
            (Some("error"), Some("shutting_down")),
            "{rest:?}"
        );
    }
    stopping.await.unwrap();
}

/// Waits until `name` is registered with session id other than `not`.
async fn registered_as(socket: &std::path::Path, name: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(endpoints) = hookbus::client::endpoints(socket).await {
            if let Some(id) = endpoints.get(name).and_then(|v| v.as_str()) {
                if Some(id) != not {
                    return id.to_owned();
                }
            }
        }
        assert!(Instant::now() < deadline, "`{name}` was not registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_listener_whose_name_is_taken_stops_instead_of_fighting() {
    let bus = TestBus::start().await;
    let listen = || {
        Command::new(bin())
            .args(["listen", "dup", "--socket"])
            .arg(&bus.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = listen();
    let first_id = registered_as(&bus.socket, "dup", None).await;
    let mut second = listen();
    let second_id = registered_as(&bus.socket, "dup", Some(&first_id)).await;
    let out = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("--take-over"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no error frame among the messages on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The name stays with the second listener.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(registered_as(&bus.socket, "dup", None).await, second_id);
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second listener runs on"
    );
    second.kill().unwrap();
    second.wait().unwrap();
    bus.stop().await;
}
