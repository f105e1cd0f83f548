//! {{name}}: a hookbus filter hook. It drops every message whose JSON contains the
//! text configured as `block` (default "forbidden") and passes the rest.
//! Edit `handle` to make it yours; wit/hook.wit documents the contract.

use std::cell::RefCell;

wit_bindgen::generate!({ world: "hook", path: "wit" });

use hookbus::hook::host::{log, Level};

thread_local! {
    /// The text that gets a message dropped, from the hook's config.
    static BLOCK: RefCell<String> = RefCell::new(String::new());
}

struct Hook;

impl Guest for Hook {
    /// `config` is the hook's `config:` from hooks.yaml, as JSON text.
    fn init(config: String) -> Result<(), String> {
        let block = block_from(&config)?;
        log(
            Level::Info,
            &format!("dropping messages that contain {block:?}"),
        );
        BLOCK.with(|b| *b.borrow_mut() = block);
        Ok(())
    }

    fn handle(msg: Message) -> Verdict {
        BLOCK.with(|b| {
            let block = b.borrow();
            if msg.json.contains(block.as_str()) {
                Verdict::Drop(format!("contains {:?}", block.as_str()))
            } else {
                Verdict::Pass
            }
        })
    }
}

export!(Hook);

/// Reads `{"block": "…"}`. A real hook would use serde_json; this one keeps the
/// template free of dependencies.
fn block_from(config: &str) -> Result<String, String> {
    let Some(at) = config.find("\"block\"") else {
        return Ok("forbidden".to_string());
    };
    let rest = config[at + 7..].trim_start();
    let value = rest
        .strip_prefix(':')
        .map(str::trim_start)
        .and_then(|v| v.strip_prefix('"'))
        .and_then(|v| v.split_once('"'))
        .map(|(text, _)| text)
        .ok_or("config: block: expected a string")?;
    if value.is_empty() {
        return Err("config: block: must not be empty".to_string());
    }
    Ok(value.to_string())
}
