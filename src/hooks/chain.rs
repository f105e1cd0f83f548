//! The filter chain over one read's messages (in order, hook by hook, so a worker
//! or a batch guest takes the whole read in one exchange), and notify hooks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::config::{OnError, Phase};
use super::fields::{Fields, Spans};
use super::set::{call, finish, CallContext, HookSet, LoadedHook, LoadedRunner};
use super::wasm::MessageView;
use super::{HookError, Verdict};

/// A message going through the filter chain.
pub struct Pending {
    text: Text,
    /// Its routing fields, read once per version of `text`.
    spans: Spans,
    pub hops: u8,
    /// Whether a hook replaced it.
    pub changed: bool,
    /// Set when a hook dropped it: (hook, reason).
    pub dropped: Option<(String, String)>,
}

/// A message's JSON: still the frame it arrived in, or a hook's replacement.
enum Text {
    Frame(bytes::Bytes),
    Owned(String),
}

impl Pending {
    /// A message as read from a client (`frame` includes the length header).
    pub fn from_frame(frame: bytes::Bytes, hops: u8) -> Self {
        let mut pending = Self {
            text: Text::Frame(frame),
            spans: Spans::default(),
            hops,
            changed: false,
            dropped: None,
        };
        pending.spans = Spans::of(pending.json());
        pending
    }

    /// A hook's replacement, from now on what the next hooks see.
    fn replace(&mut self, new: String) {
        self.spans = Spans::of(&new);
        self.text = Text::Owned(new);
        self.changed = true;
    }

    /// The routing fields of [`Self::json`].
    pub fn fields(&self) -> Fields<'_> {
        self.spans.fields(self.json())
    }

    /// The JSON as the previous hook left it.
    pub fn json(&self) -> &str {
        match &self.text {
            // Frames reach hooks only after the parser checked their UTF-8.
            Text::Frame(frame) => {
                std::str::from_utf8(crate::frame::payload(frame)).unwrap_or_default()
            }
            Text::Owned(json) => json,
        }
    }

    /// The rewritten JSON, if a hook replaced the message.
    pub fn into_replacement(self) -> Option<String> {
        match self.text {
            Text::Owned(json) if self.changed => Some(json),
            _ => None,
        }
    }
}

/// Runs the filter hooks of `set`, in order, on a batch of messages (one read of
/// one connection). Each message sees the previous hook's output; a drop ends its
/// chain; a failing hook applies its `on_error`. The batch goes through one hook
/// at a time, which lets a worker subprocess take the whole batch in one exchange.
pub async fn run_filters(set: &HookSet, items: &mut [Pending], cx: &CallContext<'_>) {
    for hook in &set.hooks {
        if hook.config.phase != Phase::Filter {
            continue;
        }
        let (selected, outcomes) = filter_batch(hook, items, cx).await;
        for (i, outcome) in selected.into_iter().zip(outcomes) {
            apply(hook, &mut items[i], outcome, cx.max_frame);
        }
    }
}

/// Runs hook `index` on the items it matches; returns their indexes and outcomes.
/// Workers and batch-taking guests get them in one exchange, other hooks one call
/// per message.
async fn filter_batch(
    hook: &Arc<LoadedHook>,
    items: &[Pending],
    cx: &CallContext<'_>,
) -> (Vec<usize>, Vec<Result<Verdict, HookError>>) {
    let whole_batch = hook.batches || matches!(hook.runner, LoadedRunner::Worker(_));
    let mut selected = Vec::new();
    let mut views = Vec::new();
    let mut outcomes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item.dropped.is_some() {
            continue;
        }
        let json = item.json();
        let fields = item.fields().strs();
        if !fields.matches(&hook.config) {
            continue;
        }
        selected.push(i);
        if hook.batches {
            views.push((fields, json));
        } else if !whole_batch {
            outcomes.push(call(hook, json, &fields, item.hops, cx).await);
        }
    }
    if whole_batch && !selected.is_empty() {
        outcomes = if hook.batches {
            if let [(fields, json)] = &views[..] {
                // A batch of one costs less through plain `handle`.
                let hops = items[selected[0]].hops;
                return (selected, vec![call(hook, json, fields, hops, cx).await]);
            }
            let hops = selected.iter().map(|&i| items[i].hops).max().unwrap_or(0);
            let views: Vec<MessageView<'_>> = views.iter().map(|(f, json)| f.view(json)).collect();
            call_wasm_batch(hook, &views, hops, cx).await
        } else {
            call_worker_batch(hook, items, &selected, cx).await
        };
    }
    (selected, outcomes)
}

/// Calls a guest's `handle-batch` once for `msgs`. A failure of the call is one
/// failure of the hook, and every message of the batch gets its error.
async fn call_wasm_batch(
    hook: &LoadedHook,
    msgs: &[MessageView<'_>],
    hops: u8,
    cx: &CallContext<'_>,
) -> Vec<Result<Verdict, HookError>> {
    let all = |e: HookError| msgs.iter().map(|_| Err(e.clone())).collect();
    if hook.stats.suspended() {
        return all(HookError::Suspended);
    }
    let started = Instant::now();
    let result = match hook.instance(cx).await {
        Ok(mut lease) => {
            let result = lease.instance.handle_batch(msgs, hops).await;
            if result.is_ok() {
                lease.keep();
            }
            result
        }
        Err(e) => Err(e),
    };
    let per_message = started.elapsed() / msgs.len() as u32;
    for _ in msgs {
        hook.stats.record(per_message);
    }
    match result {
        Ok(verdicts) => verdicts.into_iter().map(|v| finish(hook, Ok(v))).collect(),
        Err(e) => {
            let _ = finish(hook, Err(e.clone()));
            all(e)
        }
    }
}

/// Applies one hook's outcome to one message.
fn apply(
    hook: &LoadedHook,
    item: &mut Pending,
    outcome: Result<Verdict, HookError>,
    max_frame: usize,
) {
    let outcome = match outcome {
        // A replacement the host refuses counts as the hook's failure.
        Ok(Verdict::Replace(new)) => {
            match rewrite(&item.fields(), new, hook.config.grants.routing, max_frame) {
                Ok(new) => Ok(Verdict::Replace(new)),
                Err(e) => finish(hook, Err(e)),
            }
        }
        other => other,
    };
    match outcome {
        Ok(Verdict::Pass) => {}
        Ok(Verdict::Drop(reason)) => {
            hook.stats.drops.fetch_add(1, Ordering::Relaxed);
            item.dropped = Some((hook.config.name.clone(), reason));
        }
        Ok(Verdict::Replace(new)) => {
            hook.stats.replaced.fetch_add(1, Ordering::Relaxed);
            item.replace(new);
        }
        Err(e) => {
            if hook.config.on_error == OnError::Drop {
                hook.stats.drops.fetch_add(1, Ordering::Relaxed);
                item.dropped = Some((hook.config.name.clone(), format!("on_error: drop ({e})")));
            }
        }
    }
}

/// Sends a batch to a worker in one exchange: every request is written before the
/// answers are read, so the worker is never idle waiting for the next message.
async fn call_worker_batch(
    hook: &Arc<LoadedHook>,
    items: &[Pending],
    selected: &[usize],
    cx: &CallContext<'_>,
) -> Vec<Result<Verdict, HookError>> {
    if hook.stats.suspended() {
        return selected.iter().map(|_| Err(HookError::Suspended)).collect();
    }
    let batch: Vec<(String, u8)> = selected
        .iter()
        .map(|&i| (items[i].json().to_owned(), items[i].hops))
        .collect();
    let LoadedRunner::Worker(worker) = &hook.runner else {
        return selected
            .iter()
            .map(|_| Err(HookError::Process("not a worker".into())))
            .collect();
    };
    let n = batch.len();
    let started = Instant::now();
    let results = worker.handle_many(&batch, cx.emit).await;
    let each = started.elapsed() / n.max(1) as u32;
    results
        .into_iter()
        .map(|result| {
            hook.stats.record(each);
            finish(hook, result)
        })
        .collect()
}

/// Checks and normalises a replacement: a JSON object, `type` and `id` kept from
/// the original, `to` unchanged unless `routing` is granted.
fn rewrite(
    original: &Fields<'_>,
    new: String,
    routing: bool,
    max_frame: usize,
) -> Result<String, HookError> {
    if new.len() > max_frame {
        return Err(HookError::BadVerdict(format!(
            "the replacement is {} bytes, over the bus's frame limit of {max_frame}",
            new.len()
        )));
    }
    let check_to = |new_to: &str| {
        if !routing && new_to != original.strs().to() {
            return Err(HookError::Routing);
        }
        Ok(())
    };
    // A replacement must be one JSON object: checked without building it.
    let bad =
        |e: serde_json::Error| HookError::BadVerdict(format!("replace needs a JSON object: {e}"));
    serde_json::from_str::<serde::de::IgnoredAny>(&new).map_err(bad)?;
    // Usual case: the hook kept `type` and `id` (enrichment, redaction), so its text
    // is delivered as it is, never rebuilt.
    if new.trim_start().starts_with('{') {
        let fields = Fields::parse(&new);
        if fields.kind == original.kind && fields.id == original.id {
            check_to(fields.strs().to())?;
            return Ok(new);
        }
    }
    let mut map: serde_json::Map<String, Value> = serde_json::from_str(&new).map_err(bad)?;
    for (key, raw) in [("type", original.kind), ("id", original.id)] {
        if let Some(value) = raw.and_then(|r| serde_json::from_str::<Value>(r).ok()) {
            map.insert(key.into(), value);
        }
    }
    check_to(map.get("to").and_then(Value::as_str).unwrap_or(""))?;
    Ok(Value::Object(map).to_string())
}

/// Runs the notify hooks of `set` that match, ignoring verdicts.
pub async fn run_notify(set: &HookSet, json: &str, hops: u8, cx: &CallContext<'_>) {
    let fields = Fields::parse(json).strs();
    for hook in &set.hooks {
        if hook.config.phase == Phase::Notify && fields.matches(&hook.config) {
            let _ = call(hook, json, &fields, hops, cx).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn rewritten(original: &str, new: &str, routing: bool) -> Result<Value, HookError> {
        rewrite(&Fields::parse(original), new.to_string(), routing, 1 << 20)
            .map(|text| serde_json::from_str(&text).unwrap())
    }

    #[test]
    fn a_replacement_that_keeps_type_and_id_is_delivered_as_written() {
        let original = r#"{"type":"message","id":"7","to":"a","body":1}"#;
        let new = r#"{"type": "message", "id": "7", "to": "a", "body": 2, "extra": true}"#;
        let text = rewrite(&Fields::parse(original), new.to_string(), false, 1 << 20).unwrap();
        assert_eq!(text, new, "kept byte for byte");
    }

    #[test]
    fn type_and_id_are_forced_back_to_the_originals() {
        let original = r#"{"type":"message","id":"7","to":"a"}"#;
        let got = rewritten(
            original,
            r#"{"type":"other","id":"8","to":"a","x":1}"#,
            false,
        );
        assert_eq!(
            got.unwrap(),
            serde_json::json!({"type":"message","id":"7","to":"a","x":1})
        );
        let got = rewritten(original, r#"{"to":"a"}"#, false).unwrap();
        assert_eq!((&got["type"], &got["id"]), (&"message".into(), &"7".into()));
    }

    #[test]
    fn changing_to_needs_the_routing_grant_on_both_paths() {
        let original = r#"{"type":"message","id":"7","to":"a"}"#;
        for new in [
            r#"{"type":"message","id":"7","to":"b"}"#,
            r#"{"type":"message","to":"b"}"#,
        ] {
            assert!(matches!(
                rewritten(original, new, false),
                Err(HookError::Routing)
            ));
            assert_eq!(rewritten(original, new, true).unwrap()["to"], "b");
        }
    }

    #[test]
    fn a_replacement_over_the_frame_limit_is_refused() {
        let original = r#"{"type":"message","to":"a"}"#;
        let big = format!(
            r#"{{"type":"message","to":"a","pad":"{}"}}"#,
            "x".repeat(100)
        );
        assert!(matches!(
            rewrite(&Fields::parse(original), big, false, 64),
            Err(HookError::BadVerdict(e)) if e.contains("frame limit")
        ));
    }

    #[test]
    fn a_replacement_must_be_a_json_object() {
        let original = r#"{"type":"message","to":"a"}"#;
        for bad in ["[1]", "nope", r#"{"to":"a"} trailing"#, "\"x\""] {
            assert!(
                matches!(
                    rewritten(original, bad, true),
                    Err(HookError::BadVerdict(_))
                ),
                "{bad}"
            );
        }
    }
}
