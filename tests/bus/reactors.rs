//! Core modules from toolchains with a start-up of their own, through a live daemon:
//! tests/guests/go-filter (Go, a wasip1 *reactor*: every export traps until the host
//! has called `_initialize`, and Go's runtime needs real clocks) and
//! tests/guests/zig-filter (Zig, freestanding, no WASI). Both drop a message whose
//! JSON contains "forbidden" and pass the others. Also: a WASI *command* module
//! (`_start`, no `_initialize`) is refused at load, saying how to build a reactor.
//! The guests are built by scripts/build-guests.sh.

use serde_json::{json, Value};

use crate::common::{bin, cache_home, guest, TestBus};

fn hook<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no hook {name} in {status}"))
}

/// Runs target/guests/NAME.wasm as the only filter: the "forbidden" message is
/// dropped (and its sender, which asked for acks, is told by whom and why), the clean
/// one arrives, and the hook counts one drop and no error.
async fn drops_the_forbidden_and_passes_the_clean(name: &str) {
    let wasm = guest(name);
    // A generous timeout: a debug host runs guests far slower than a release one.
    let bus = TestBus::with_hooks(&format!(
        "hooks:\n  - name: {name}\n    wasm: {}\n    limits: {{ timeout_ms: 1000 }}\n    config: {{ note: from the test }}\n",
        wasm.display()
    ))
    .await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    tx.hello_acks().await;

    tx.send(
        &json!({"type": "message", "to": "rx", "id": "bad", "body": {"text": "this is forbidden"}}),
    )
    .await;
    assert_eq!(
        tx.recv().await,
        json!({"type": "ack", "id": "bad", "delivered": 0, "dropped_by": name, "reason": "contains \"forbidden\""})
    );
    tx.send(&json!({"type": "message", "to": "rx", "id": "clean", "body": {"text": "all fine"}}))
        .await;
    assert_eq!(tx.recv().await["delivered"], 1);

    let got = rx.sync().await;
    assert_eq!(got.len(), 1, "only the clean message arrives: {got:?}");
    assert_eq!(got[0]["id"], "clean");
    assert_eq!(got[0]["body"], json!({"text": "all fine"}));

    let status = bus
        .wait_hooks("both calls to be counted", |s| hook(s, name)["calls"] == 2)
        .await;
    let h = hook(&status, name);
    assert_eq!(h["kind"], "wasm core module", "{status}");
    assert_eq!(
        (h["drops"].clone(), h["errors"].clone()),
        (json!(1), json!(0)),
        "{status}"
    );
    assert_eq!(status["filtered_out"], 1, "{status}");
    bus.stop().await;
}

#[tokio::test]
async fn a_go_reactor_is_initialised_and_filters() {
    drops_the_forbidden_and_passes_the_clean("go-filter").await;
}

#[tokio::test]
async fn a_zig_core_module_filters() {
    drops_the_forbidden_and_passes_the_clean("zig-filter").await;
}

#[test]
fn a_wasi_command_module_is_refused_with_how_to_build_a_reactor() {
    let dir = tempfile::tempdir().unwrap();
    // The ABI's exports, but also `_start` and no `_initialize`: a command.
    std::fs::write(
        dir.path().join("command.wat"),
        r#"(module
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let config = dir.path().join("hooks.yaml");
    std::fs::write(
        &config,
        "hooks:\n  - name: command\n    wasm: command.wat\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["hooks", "check"])
        .arg(&config)
        .env("XDG_CACHE_HOME", cache_home())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    for expected in [
        "is a WASI command (it exports `_start`)",
        "build it as a reactor",
        "-buildmode=c-shared",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
}
