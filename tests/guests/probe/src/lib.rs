//! A hook component for hookbus's tests. Each message's `body.probe` picks what it
//! does, so one module exercises every path of the host:
//!
//! | body.probe | effect |
//! |---|---|
//! | (absent)   | pass, or with config `{"tag": T}` replace, appending T to `tagged_by` |
//! | `drop`     | drop with a reason |
//! | `loop`     | spin forever (the host's deadline must interrupt it) |
//! | `trap`     | trap |
//! | `bomb`     | allocate until the memory cap stops it |
//! | `read`     | try to read `body.path` and report the result in `body.read` |
//! | `emit`     | emit `{"to": body.emit_to, "body": {"notified": <id>}}`, then pass |
//! | `echo`     | emit the same message again (a loop), then pass |
//! | `reroute`  | replace `to` with `body.reroute` |
//! | `name`     | replace, setting `body.name` to the host's hook-name |
//! | `env`      | replace, setting `body.value` to env var `body.var` (or `null`) |
//! | `clock`    | replace, setting `body.now` to the WASI wall clock, in seconds |
//!
//! Config `{"fail_init": true}` makes `init` fail.

use std::cell::RefCell;

use serde_json::{json, Value};

wit_bindgen::generate!({ world: "hook", path: "../../../wit" });

use hookbus::hook::host;
use hookbus::hook::types::Level;

thread_local! {
    static TAG: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Probe;

impl Guest for Probe {
    fn init(config: String) -> Result<(), String> {
        let config: Value = serde_json::from_str(&config).map_err(|e| e.to_string())?;
        if config["fail_init"] == true {
            return Err("configured to fail".into());
        }
        TAG.with(|t| *t.borrow_mut() = config["tag"].as_str().map(str::to_owned));
        host::log(Level::Debug, "probe ready");
        Ok(())
    }

    fn handle(msg: Message) -> Verdict {
        let mut value: Value = match serde_json::from_str(&msg.json) {
            Ok(v) => v,
            Err(e) => return Verdict::Drop(format!("not JSON: {e}")),
        };
        let probe = value["body"]["probe"].as_str().unwrap_or("").to_owned();
        match probe.as_str() {
            "drop" => Verdict::Drop("probe said drop".into()),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => panic!("probe trap"),
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "read" => {
                let path = value["body"]["path"].as_str().unwrap_or("/etc/hostname").to_owned();
                value["body"]["read"] = match std::fs::read_to_string(&path) {
                    Ok(text) => json!(format!("ok: {} bytes", text.len())),
                    Err(e) => json!(format!("denied: {e}")),
                };
                Verdict::Replace(value.to_string())
            }
            "emit" => {
                let to = value["body"]["emit_to"].as_str().unwrap_or("").to_owned();
                let id = msg.envelope.id.clone().unwrap_or_default();
                if let Err(e) = host::emit(&json!({"to": to, "body": {"notified": id}}).to_string()) {
                    host::log(Level::Warn, &format!("emit refused: {e}"));
                }
                Verdict::Pass
            }
            "echo" => {
                // Emits the same message again: a loop the hop limit must cut.
                let copy = json!({"to": value["to"], "body": value["body"]});
                if let Err(e) = host::emit(&copy.to_string()) {
                    host::log(Level::Info, &format!("echo refused: {e}"));
                }
                Verdict::Pass
            }
            "reroute" => {
                value["to"] = value["body"]["reroute"].clone();
                Verdict::Replace(value.to_string())
            }
            "env" => {
                let var = value["body"]["var"].as_str().unwrap_or("HOME").to_owned();
                value["body"]["value"] = std::env::var(var).map_or(Value::Null, Value::from);
                Verdict::Replace(value.to_string())
            }
            "clock" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                value["body"]["now"] = json!(now);
                Verdict::Replace(value.to_string())
            }
            "name" => {
                value["body"]["name"] = json!(host::hook_name());
                Verdict::Replace(value.to_string())
            }
            _ => match TAG.with(|t| t.borrow().clone()) {
                Some(tag) => {
                    let mut tags = value["tagged_by"].as_array().cloned().unwrap_or_default();
                    tags.push(json!(tag));
                    value["tagged_by"] = json!(tags);
                    Verdict::Replace(value.to_string())
                }
                None => Verdict::Pass,
            },
        }
    }
}

export!(Probe);
