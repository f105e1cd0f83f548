//! Test guest for world `hook-batch`. For each message of a batch:
//! - `body.batch == "drop"`: dropped;
//! - otherwise replaced with `batch_size` (the number of messages in its call) added.
//! A batch holding a message with `body.batch == "short"` gets one verdict too few,
//! which the host must treat as the whole call failing.

use serde_json::{Map, Value};

wit_bindgen::generate!({ world: "hook-batch", path: "../../../wit" });

struct Batcher;

impl Guest for Batcher {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn handle(msg: Message) -> Verdict {
        verdict(&msg, 1)
    }

    fn handle_batch(msgs: Vec<Message>) -> Vec<Verdict> {
        let mut verdicts: Vec<Verdict> = msgs.iter().map(|m| verdict(m, msgs.len())).collect();
        if msgs.iter().any(|m| action(m).as_deref() == Some("short")) {
            verdicts.pop();
        }
        verdicts
    }
}

export!(Batcher);

fn action(msg: &Message) -> Option<String> {
    let value: Value = serde_json::from_str(&msg.json).ok()?;
    value["body"]["batch"].as_str().map(str::to_string)
}

fn verdict(msg: &Message, batch_size: usize) -> Verdict {
    if action(msg).as_deref() == Some("drop") {
        return Verdict::Drop("batch drop".into());
    }
    let Ok(mut message) = serde_json::from_str::<Map<String, Value>>(&msg.json) else {
        return Verdict::Pass;
    };
    message.insert("batch_size".into(), batch_size.into());
    Verdict::Replace(Value::Object(message).to_string())
}
