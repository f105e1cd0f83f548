//! The smallest hookbus hook: it passes every message untouched, without parsing it.
//! It targets world `hook-batch`, so the bus hands it a whole read's messages per call.
//! `scripts/bench-hooks.sh` uses it to measure what the host itself costs.

wit_bindgen::generate!({ world: "hook-batch", path: "../../wit" });

struct Pass;

impl Guest for Pass {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn handle(_msg: Message) -> Verdict {
        Verdict::Pass
    }

    fn handle_batch(msgs: Vec<Message>) -> Vec<Verdict> {
        msgs.iter().map(|_| Verdict::Pass).collect()
    }
}

export!(Pass);
