//! Feature `kv`: the durable key-value store, against a live server and,
//! for crashes, the daemon binary.

use std::path::Path;
use std::time::{Duration, Instant};

use hookbus::client::Bus;
use hookbus::store::SyncPolicy;
use serde_json::{json, Value};

use crate::common::{bus_when_up, serve_process, Daemon, Raw, TestBus};
use crate::topics::speaker;

async fn ask(c: &mut Raw, request: Value) -> Value {
    c.send(&request).await;
    c.recv().await
}

#[tokio::test]
async fn put_get_compare_and_set_keys_and_every_refusal_by_name() {
    let state = tempfile::tempdir().unwrap();
    let bus = TestBus::with_store(state.path(), SyncPolicy::Full).await;
    let mut c = speaker(&bus, &["kv"]).await;
    let a = ask(
        &mut c,
        json!({"type": "kv_put", "rid": 1, "key": "cfg.theme", "value": "dark", "if_revision": 0}),
    )
    .await;
    assert_eq!(
        (
            a["type"].as_str(),
            a["rid"].as_u64(),
            a["revision"].as_u64()
        ),
        (Some("kv_stored"), Some(1), Some(1)),
        "{a}"
    );
    let a = ask(
        &mut c,
        json!({"type": "kv_put", "key": "cfg.theme", "value": "light", "if_revision": 0}),
    )
    .await;
    assert_eq!(
        (a["code"].as_str(), a["revision"].as_u64()),
        (Some("revision_mismatch"), Some(1)),
        "{a}"
    );
    let a = ask(
        &mut c,
        json!({"type": "kv_put", "key": "cfg.theme", "value": {"v": "light"}, "if_revision": 1}),
    )
    .await;
    assert_eq!(a["revision"], 2, "{a}");
    // Pipelined: the get is answered after the put before it committed.
    c.send(&json!({"type": "kv_put", "key": "cfg.font", "value": 12}))
        .await;
    c.send(&json!({"type": "kv_get", "rid": "g", "key": "cfg.font"}))
        .await;
    assert_eq!(c.recv().await["type"], "kv_stored");
    let a = c.recv().await;
    assert_eq!(
        (a["rid"].as_str(), &a["value"], a["revision"].as_u64()),
        (Some("g"), &json!(12), Some(3)),
        "{a}"
    );
    let a = ask(&mut c, json!({"type": "kv_get", "key": "cfg.theme"})).await;
    assert_eq!(a["value"], json!({"v": "light"}));
    let a = ask(&mut c, json!({"type": "kv_keys", "prefix": "cfg."})).await;
    assert_eq!(a["keys"], json!(["cfg.font", "cfg.theme"]), "{a}");
    let a = ask(
        &mut c,
        json!({"type": "kv_delete", "key": "cfg.font", "if_revision": 2}),
    )
    .await;
    assert_eq!(
        (a["code"].as_str(), a["revision"].as_u64()),
        (Some("revision_mismatch"), Some(3)),
        "{a}"
    );
    let a = ask(&mut c, json!({"type": "kv_delete", "key": "cfg.font"})).await;
    assert_eq!(
        (a["type"].as_str(), a["revision"].as_u64()),
        (Some("kv_deleted"), Some(4)),
        "{a}"
    );
    for (request, code) in [
        (json!({"type": "kv_get", "key": "cfg.font"}), "not_found"),
        (json!({"type": "kv_delete", "key": "cfg.font"}), "not_found"),
        (
            json!({"type": "kv_put", "key": "cfg.*", "value": 1}),
            "bad_key",
        ),
        (
            json!({"type": "kv_put", "key": "big", "value": "x".repeat(1 << 20)}),
            "value_too_large",
        ),
        (
            json!({"type": "kv_unwatch", "wid": 99}),
            "no_such_subscription",
        ),
    ] {
        let a = ask(&mut c, request.clone()).await;
        assert_eq!(a["code"], code, "{request}: {a}");
    }
    // Without the feature, or on a bus without a store: refused by name.
    let mut plain = speaker(&bus, &["topics"]).await;
    let a = ask(&mut plain, json!({"type": "kv_get", "key": "cfg.theme"})).await;
    assert_eq!(a["code"], "not_negotiated", "{a}");
    assert_eq!(bus.status().await["store"]["state"], "ok");
    bus.stop().await;
    let storeless = TestBus::start().await;
    let mut c = speaker(&storeless, &["kv"]).await;
    let a = ask(&mut c, json!({"type": "kv_get", "key": "a"})).await;
    assert_eq!(a["code"], "storage_unavailable", "{a}");
    storeless.stop().await;
}

/// Adds one to `key` by compare-and-set until it wins; returns the attempts.
async fn increment(bus: &Bus, key: &str) -> u32 {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (value, revision) = match bus.kv_get(key).await {
            Ok(v) => (
                v["value"].as_u64().unwrap(),
                v["revision"].as_u64().unwrap(),
            ),
            Err(e) if e.code() == Some("not_found") => (0, 0),
            Err(e) => panic!("{e}"),
        };
        match bus
            .kv_put(key, json!(value + 1), None, Some(revision))
            .await
        {
            Ok(_) => return attempts,
            Err(e) if e.code() == Some("revision_mismatch") => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_compare_and_set_to_8000_and_a_watcher_sees_every_revision_in_order() {
    let state = tempfile::tempdir().unwrap();
    let bus = TestBus::with_store(state.path(), SyncPolicy::Normal).await;
    let watcher = Bus::connect(&bus.socket, None, &["kv"]).await.unwrap();
    let mut changes = watcher.kv_watch("count.>").await.unwrap();
    assert_eq!(changes.recv().await.unwrap()["type"], "kv_synced");
    // The watcher keeps up (one that does not loses its watch).
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 8000 {
            match tokio::time::timeout(Duration::from_secs(30), changes.recv()).await {
                Ok(Some(c)) => seen.push(c),
                _ => break,
            }
        }
        seen
    });
    let mut clients = Vec::new();
    for _ in 0..8 {
        let socket = bus.socket.clone();
        clients.push(tokio::spawn(async move {
            let bus = Bus::connect(&socket, None, &["kv"]).await.unwrap();
            let mut attempts = 0;
            for _ in 0..1000 {
                attempts += increment(&bus, "count.x").await;
            }
            attempts
        }));
    }
    let mut attempts = 0;
    for c in clients {
        attempts += c.await.unwrap();
    }
    let reader = Bus::connect(&bus.socket, None, &["kv"]).await.unwrap();
    assert_eq!(reader.kv_get("count.x").await.unwrap()["value"], 8000);
    assert!(
        attempts > 8000,
        "eight clients never raced ({attempts} attempts)"
    );
    // Every revision, in order, each value one more than the last.
    let mut last = (0, 0);
    let seen = seen.await.unwrap();
    assert_eq!(seen.len(), 8000);
    for c in seen {
        assert_eq!(c["op"], "put", "{c}");
        let (value, revision) = (
            c["value"].as_u64().unwrap(),
            c["revision"].as_u64().unwrap(),
        );
        assert_eq!(value, last.0 + 1, "{c}");
        assert!(revision > last.1, "{c}");
        last = (value, revision);
    }
    bus.stop().await;
}

#[tokio::test]
async fn a_key_expires_on_time_and_its_watchers_are_told() {
    let state = tempfile::tempdir().unwrap();
    let bus = TestBus::with_store(state.path(), SyncPolicy::Full).await;
    let mut watcher = speaker(&bus, &["kv"]).await;
    let mut c = speaker(&bus, &["kv"]).await;
    ask(
        &mut c,
        json!({"type": "kv_put", "key": "lock.a", "value": "me", "ttl_s": 0.3}),
    )
    .await;
    ask(
        &mut c,
        json!({"type": "kv_put", "key": "lock.b", "value": "kept"}),
    )
    .await;
    let a = ask(
        &mut watcher,
        json!({"type": "kv_watch", "rid": 1, "key": "lock.*"}),
    )
    .await;
    assert_eq!(a["type"], "kv_watching", "{a}");
    let wid = a["wid"].clone();
    let mut current = [watcher.recv().await, watcher.recv().await];
    current.sort_by_key(|c| c["key"].as_str().unwrap().to_owned());
    assert_eq!(
        (&current[0]["key"], &current[0]["op"]),
        (&json!("lock.a"), &json!("put"))
    );
    assert!(
        current[0]["expires_at_ms"].as_u64().is_some(),
        "{}",
        current[0]
    );
    assert_eq!(
        watcher.recv().await,
        json!({"type": "kv_synced", "wid": wid})
    );
    let put = Instant::now();
    let expired = watcher.recv().await;
    let took = put.elapsed();
    assert_eq!(
        (&expired["op"], &expired["key"]),
        (&json!("expire"), &json!("lock.a")),
        "{expired}"
    );
    assert!(took < Duration::from_millis(1500), "expired after {took:?}");
    let a = ask(&mut c, json!({"type": "kv_get", "key": "lock.a"})).await;
    assert_eq!(a["code"], "not_found", "{a}");
    let a = ask(&mut c, json!({"type": "kv_get", "key": "lock.b"})).await;
    assert_eq!(a["value"], "kept");
    bus.stop().await;
}

#[tokio::test]
async fn values_and_revisions_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let bus = TestBus::with_store(state.path(), SyncPolicy::Full).await;
    let c = Bus::connect(&bus.socket, None, &["kv"]).await.unwrap();
    for i in 0..50u64 {
        c.kv_put(&format!("k.{i}"), json!({"i": i}), None, None)
            .await
            .unwrap();
    }
    c.kv_delete("k.7", None).await.unwrap();
    drop(c);
    bus.stop().await;
    let bus = TestBus::with_store(state.path(), SyncPolicy::Full).await;
    let c = Bus::connect(&bus.socket, None, &["kv"]).await.unwrap();
    assert_eq!(c.kv_keys("k.").await.unwrap().len(), 49);
    let v = c.kv_get("k.49").await.unwrap();
    assert_eq!(
        (&v["value"], v["revision"].as_u64()),
        (&json!({"i": 49}), Some(50))
    );
    assert_eq!(c.kv_get("k.7").await.unwrap_err().code(), Some("not_found"));
    assert_eq!(
        c.kv_put("k.new", json!(1), None, None).await.unwrap(),
        52,
        "the revision sequence goes on"
    );
    bus.stop().await;
}

fn serve(socket: &Path, state: &Path) -> Daemon {
    serve_process(
        socket,
        [std::ffi::OsStr::new("--state-dir"), state.as_os_str()],
    )
}

async fn connect_when_up(socket: &Path) -> Bus {
    bus_when_up(socket, &["kv"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill_mid_flood() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, state) = (dir.path().join("bus.sock"), dir.path().join("state"));
    let mut daemon = serve(&socket, &state);
    let bus = std::sync::Arc::new(connect_when_up(&socket).await);
    // Four writers put keys as fast as they are acknowledged.
    let mut writers = Vec::new();
    for w in 0..4 {
        let bus = bus.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let key = format!("w{w}.k{i}");
                match bus.kv_put(&key, json!(i), None, None).await {
                    Ok(rev) => acked.push((key, i, rev)),
                    Err(_) => return acked,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 20,
        "too few writes before the kill: {}",
        acked.len()
    );
    let _ = std::fs::remove_file(&socket);
    let _daemon = serve(&socket, &state);
    let bus = connect_when_up(&socket).await;
    for (key, i, rev) in &acked {
        let v = bus
            .kv_get(key)
            .await
            .unwrap_or_else(|e| panic!("{key}, acknowledged at revision {rev}, was lost: {e}"));
        assert_eq!(
            (&v["value"], v["revision"].as_u64()),
            (&json!(i), Some(*rev)),
            "{key}"
        );
    }
}

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped; `None` (the
/// test is skipped, saying why) when this process may not mount.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs(dir.to_owned())),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs for the disk-full test (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount for the disk-full test: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system of `path` with a file there; returns its path.
fn fill(path: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = path.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&chunk[..512]).is_ok() {}
    let _ = f.sync_all();
    filler
}

#[tokio::test]
async fn a_full_disk_refuses_writes_by_name_spares_messaging_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Some(_tmpfs) = Tmpfs::mount(&state, "4m") else {
        return;
    };
    let bus = TestBus::with_store(&state, SyncPolicy::Full).await;
    let c = Bus::connect(&bus.socket, None, &["kv"]).await.unwrap();
    c.kv_put("before", json!("kept"), None, None).await.unwrap();
    let filler = fill(&state);
    let big = json!("x".repeat(256 * 1024));
    let refused = c
        .kv_put("during", big.clone(), None, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("storage_unavailable"), "{refused}");
    // Never a false acknowledgement: the refused value is nowhere.
    assert_eq!(
        c.kv_get("during").await.unwrap_err().code(),
        Some("not_found")
    );
    assert_eq!(c.kv_get("before").await.unwrap()["value"], "kept");
    let status = bus.status().await;
    assert_eq!(status["store"]["state"], "degraded", "{}", status["store"]);
    assert!(status["counters"]["storage_refusals"].as_u64() >= Some(1));
    // Plain messaging does not notice.
    let mut a = bus.registered("a").await;
    let mut b = bus.registered("b").await;
    a.send(&json!({"type": "message", "to": "b", "body": "still here"}))
        .await;
    assert_eq!(b.recv().await["body"], "still here");
    // Space comes back: the store writes again by itself.
    std::fs::remove_file(filler).unwrap();
    bus.wait_status("the store to recover", |s| s["store"]["state"] == "ok")
        .await;
    assert!(c.kv_put("during", big, None, None).await.is_ok());
    drop(c);
    bus.stop().await;
}

#[tokio::test]
async fn a_store_that_cannot_open_refuses_reads_instead_of_finding_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "a file where the state directory should be").unwrap();
    let bus = TestBus::with_store(&state, SyncPolicy::Full).await;
    let mut c = speaker(&bus, &["kv", "jobs"]).await;
    for request in [
        json!({"type": "kv_get", "key": "a"}),
        json!({"type": "kv_keys", "prefix": ""}),
        json!({"type": "kv_watch", "key": ">"}),
        json!({"type": "kv_put", "key": "a", "value": 1}),
        json!({"type": "job_publish", "goal": "a"}),
    ] {
        let a = ask(&mut c, request.clone()).await;
        assert_eq!(a["code"], "storage_unavailable", "{request}: {a}");
    }
    let store = &bus.status().await["store"];
    assert_eq!(store["state"], "degraded", "{store}");
    assert!(
        store["error"].as_str().unwrap().contains("state directory"),
        "{store}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn watches_are_bounded_in_number_snapshot_and_what_a_stalled_watcher_holds() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_owned();
    let bus = TestBus::start_with(move |c| {
        c.store = Some(hookbus::store::StoreConfig::new(dir, SyncPolicy::Normal));
        c.outbox_capacity = 64;
    })
    .await;
    let writer = Bus::connect(&bus.socket, None, &["kv"]).await.unwrap();
    for i in 0..10_001 {
        writer
            .kv_put(&format!("big.k{i}"), json!(i), None, None)
            .await
            .unwrap();
    }
    let mut c = speaker(&bus, &["kv"]).await;
    let a = ask(&mut c, json!({"type": "kv_watch", "key": "big.>"})).await;
    assert_eq!(a["code"], "snapshot_too_large", "{a}");
    let a = ask(
        &mut c,
        json!({"type": "kv_watch", "key": "big.>", "snapshot": false}),
    )
    .await;
    assert_eq!(a["type"], "kv_watching", "{a}");
    assert_eq!(c.recv().await["type"], "kv_synced");
    for _ in 1..256 {
        c.send(&json!({"type": "kv_watch", "key": "other", "snapshot": false}))
            .await;
    }
    let frames = c.sync().await;
    assert_eq!(
        frames.iter().filter(|f| f["type"] == "kv_watching").count(),
        255
    );
    let a = ask(&mut c, json!({"type": "kv_watch", "key": "other"})).await;
    assert_eq!(a["code"], "too_many_subscriptions", "{a}");
    // A watcher that stops reading loses its watch once its outbox is full,
    // and the writer is never held back by it.
    let mut stalled = speaker(&bus, &["kv"]).await;
    let a = ask(
        &mut stalled,
        json!({"type": "kv_watch", "key": "big.>", "snapshot": false}),
    )
    .await;
    assert_eq!(a["type"], "kv_watching");
    let t = Instant::now();
    let pad = "x".repeat(1000);
    for i in 0..1000 {
        writer
            .kv_put(&format!("big.k{i}"), json!(pad), None, None)
            .await
            .unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the writer was held back"
    );
    let got = stalled.sync().await;
    let ended = got
        .iter()
        .find(|f| f["type"] == "kv_unwatched")
        .expect("the watch was not ended");
    assert!(
        ended["reason"].as_str().unwrap().contains("fell behind"),
        "{ended}"
    );
    // What the outbox (64 frames) and the socket's buffer held, not all 1000.
    assert!(
        got.len() < 600,
        "{} frames held for a stalled watcher",
        got.len()
    );
    assert!(bus.status().await["counters"]["watches_ended"].as_u64() >= Some(1));
    bus.stop().await;
}

#[tokio::test]
async fn values_some_clients_cannot_read_back_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let bus = TestBus::with_store(state.path(), SyncPolicy::Full).await;
    let mut c = speaker(&bus, &["kv"]).await;
    for value in ["1e999", r#""\ud800""#] {
        c.send_payload(format!(r#"{{"type":"kv_put","key":"odd","value":{value}}}"#).as_bytes())
            .await;
        let a = c.recv().await;
        assert_eq!(a["code"], "bad_request", "{value}: {a}");
    }
    bus.stop().await;
}
