//! The smallest hookbus hook: it passes every message untouched, without parsing it.
//! `scripts/bench-hooks.sh` uses it to measure what the host itself costs per call.

wit_bindgen::generate!({ world: "hook", path: "../../wit" });

struct Pass;

impl Guest for Pass {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn handle(_msg: hookbus::hook::types::Message) -> Verdict {
        Verdict::Pass
    }
}

export!(Pass);
