//! `hookbus hooks check|status|test|new`: the hook author's tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::scaffold::{self, Lang};
use hookbus::frame::DEFAULT_MAX_FRAME_LEN;
use hookbus::hooks::config::{self, HookConfig, HookSource, Phase, Runner};
use hookbus::hooks::wasm::{self, WasmEngine};
use hookbus::hooks::{self, CallContext, EmitSink, Fields, HookSet, LoadedRunner, Verdict};

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Parse a hooks config, compile and init every hook, and report
    Check {
        /// hooks.yaml to check [default: as the daemon resolves it: $HOOKBUS_HOOKS,
        /// $HERMES_BUS_HOOKS, $XDG_CONFIG_HOME/hookbus/hooks.yaml]
        file: Option<PathBuf>,
    },
    /// Show each hook of the running daemon: phase, calls, p50/p99 µs, errors,
    /// suspensions, and the last reload's result
    Status {
        /// Print the raw JSON status
        #[arg(long)]
        json: bool,
    },
    /// Run one hook offline on messages read from stdin (one JSON object per line)
    /// and print each verdict as a JSON line
    #[command(
        after_help = "Example:\n  echo '{\"type\":\"message\",\"to\":\"a\",\"body\":{\"k\":\"sk-123\"}}' | hookbus hooks test redact --config hooks.yaml"
    )]
    Test {
        /// Name of the hook in the config
        hook: String,
        /// hooks.yaml holding the hook [default: as the daemon resolves it]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Create a hook project: source with the contract's bindings, a build.sh that
    /// installs its toolchain, and a hooks.yaml entry
    #[command(
        after_help = "Example:\n  hookbus hooks new my-filter --lang rust && cd my-filter && ./build.sh\n  echo '{\"type\":\"message\",\"to\":\"a\",\"body\":\"forbidden\"}' | hookbus hooks test my-filter --config hooks.yaml"
    )]
    New {
        /// Hook name (lower-case letters, digits and '-')
        name: String,
        /// Language of the hook
        #[arg(long, value_enum)]
        lang: Lang,
        /// Folder to create [default: ./NAME]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Runs a `hookbus hooks` command.
pub async fn run(socket: &Path, command: HooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        HooksCommand::Status { json } => status(socket, json).await,
        HooksCommand::Check { file } => check(file).await,
        HooksCommand::Test { hook, config } => test(&hook, config).await,
        HooksCommand::New { name, lang, dir } => {
            let dir = scaffold::create(&name, lang, dir)?;
            println!("{}", scaffold::next_steps(&name, &dir));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn source_for(file: Option<PathBuf>) -> HookSource {
    match file {
        Some(file) => HookSource::File(file),
        None => config::resolve_source(None, None),
    }
}

fn engine() -> anyhow::Result<WasmEngine> {
    WasmEngine::new(wasm::default_cache_dir()).context("cannot create the wasm engine")
}

fn kind(hook: &HookConfig) -> &'static str {
    match hook.runner {
        Runner::Wasm(_) => "wasm",
        Runner::Spawn(_) => "spawn",
        Runner::Worker(_) => "worker",
    }
}

fn phase(hook: &HookConfig) -> &'static str {
    match hook.phase {
        Phase::Filter => "filter",
        Phase::Notify => "notify",
    }
}

/// An emit sink that prints what a hook emits instead of sending it.
fn printing_emitter() -> EmitSink {
    Arc::new(|hook: &str, json: String, hops: u8| {
        let msg = hooks::runtime::emitted_message(hook, &json, hops, DEFAULT_MAX_FRAME_LEN)?;
        let value: Value = serde_json::from_slice(hookbus::frame::payload(&msg.frame))
            .map_err(|e| e.to_string())?;
        println!("{}", json!({ "emit": value }));
        Ok(())
    })
}

async fn check(file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let source = source_for(file);
    let configs = match config::load(&source) {
        Ok(c) => c,
        Err(e) => {
            println!("✗ {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{source}: {} hook(s)", configs.len());
    let engine = engine()?;
    let emit = printing_emitter();
    let mut failed = 0;
    for hook in configs {
        let started = Instant::now();
        let label = format!("{} ({} {})", hook.name, kind(&hook), phase(&hook));
        let none = HookSet::empty();
        match HookSet::build(0, vec![hook], &none, &engine, &emit, DEFAULT_MAX_FRAME_LEN).await {
            Ok(set) => {
                let took = started.elapsed().as_secs_f64() * 1000.0;
                let cx = context(&engine, &emit);
                let health = match set.hooks[0].check_health(&cx).await {
                    None => String::new(),
                    Some(Ok(())) => ", health ok".into(),
                    Some(Err(e)) => format!(", health: {e}"),
                };
                println!("✓ {label}: loaded and initialised in {took:.1} ms{health}");
                set.shutdown_unshared(&none).await;
            }
            Err(e) => {
                failed += 1;
                println!("✗ {label}: {e}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn context<'a>(engine: &'a WasmEngine, emit: &'a EmitSink) -> CallContext<'a> {
    CallContext {
        engine,
        emit,
        max_frame: DEFAULT_MAX_FRAME_LEN,
    }
}

async fn status(socket: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let status = hookbus::client::query(socket, &json!({"type": "hooks_status"})).await?;
    if as_json {
        println!("{status}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "hooks from {} (generation {})",
        status["source"].as_str().unwrap_or("?"),
        status["generation"]
    );
    let reload = &status["last_reload"];
    let hooks = status["hooks"].as_array().cloned().unwrap_or_default();
    match reload["ok"].as_bool() {
        Some(true) => println!(
            "last reload: ok, generation {}, {:.1} ms",
            reload["generation"],
            reload["took_ms"].as_f64().unwrap_or(0.0)
        ),
        _ if hooks.is_empty() => println!(
            "last reload: FAILED: {}",
            reload["error"].as_str().unwrap_or("?")
        ),
        _ => println!(
            "last reload: FAILED, the hooks below stay in force: {}",
            reload["error"].as_str().unwrap_or("?")
        ),
    }
    if let Some(files) = status["watching"].as_array() {
        let files: Vec<&str> = files.iter().filter_map(Value::as_str).collect();
        println!("watching: {}", files.join(", "));
    }
    println!(
        "filtered out: {}   notify overflow: {}   emits cut by the hop limit: {}",
        status["filtered_out"], status["notify_overflow"], status["hop_limited"]
    );
    if hooks.is_empty() {
        println!("no hooks in force");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for line in status_table(&hooks) {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `hooks status` table: a header and a row per hook (with its last error
/// and health beneath), every column aligned.
fn status_table(hooks: &[Value]) -> Vec<String> {
    // serde_json's Display ignores widths: every cell becomes a String first.
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let row = |cells: [&str; 10]| {
        format!(
            "{:<20} {:<17} {:<7} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9]
        )
    };
    let mut lines = vec![row([
        "hook",
        "kind",
        "phase",
        "calls",
        "p50 µs",
        "p99 µs",
        "errors",
        "drops",
        "skipped",
        "suspended",
    ])];
    for h in hooks {
        let suspended = format!(
            "{}{}",
            text(&h["suspensions"]),
            if h["suspended"] == true { " (now)" } else { "" }
        );
        let cells = [
            text(&h["name"]),
            text(&h["kind"]),
            text(&h["phase"]),
            text(&h["calls"]),
            text(&h["p50_us"]),
            text(&h["p99_us"]),
            text(&h["errors"]),
            text(&h["drops"]),
            text(&h["skipped"]),
            suspended,
        ];
        lines.push(row(cells.each_ref().map(String::as_str)));
        if let Some(e) = h["last_error"].as_str() {
            lines.push(format!("    last error: {e}"));
        }
        if let Some(health) = h["health"].as_str().filter(|h| *h != "ok") {
            lines.push(format!("    unhealthy: {health}"));
        }
    }
    lines
}

async fn test(name: &str, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let source = source_for(file);
    let configs = config::load(&source)?;
    let Some(hook) = configs.into_iter().find(|h| h.name == name) else {
        bail!("no hook named `{name}` in {source}; `hookbus hooks check` lists them");
    };
    let engine = engine()?;
    let emit = printing_emitter();
    let none = HookSet::empty();
    let set = HookSet::build(1, vec![hook], &none, &engine, &emit, DEFAULT_MAX_FRAME_LEN).await?;
    let cx = context(&engine, &emit);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut out = std::io::stdout();
    while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(_)) => {
                let fields = Fields::parse(&line).strs();
                let result = match &set.hooks[0].runner {
                    // Run it here and wait, rather than queue it as the daemon does.
                    LoadedRunner::Spawn(spawn) => spawn.run(&line).await.map(|()| Verdict::Pass),
                    _ => hooks::call(&set.hooks[0], &line, &fields, 0, &cx).await,
                };
                match result {
                    Ok(Verdict::Pass) => json!({"verdict": "pass"}),
                    Ok(Verdict::Drop(reason)) => json!({"verdict": "drop", "reason": reason}),
                    Ok(Verdict::Replace(m)) => match serde_json::from_str::<Value>(&m) {
                        Ok(message) => json!({"verdict": "replace", "message": message}),
                        Err(e) => json!({"error": format!("replace carried invalid JSON: {e}")}),
                    },
                    Err(e) => json!({"error": e.to_string()}),
                }
            }
            Ok(_) => json!({"error": "each line must be a JSON object (one message)"}),
            Err(e) => json!({"error": format!("not JSON: {e}")}),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    set.shutdown_unshared(&none).await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_columns_line_up_under_their_headers() {
        let hooks = [
            json!({"name": "redact", "kind": "wasm component", "phase": "filter", "calls": 12345,
                   "p50_us": 3, "p99_us": null, "errors": 0, "drops": 7, "suspensions": 0, "suspended": false}),
            json!({"name": "notify", "kind": "spawn", "phase": "notify", "calls": 2, "p50_us": 1500,
                   "p99_us": 2000, "errors": 1, "drops": 0, "skipped": 3, "suspensions": 2, "suspended": true}),
        ];
        let lines = status_table(&hooks);
        let header = &lines[0];
        let chars = |s: &str| s.chars().collect::<Vec<char>>();
        // Each header word ends where the values under it end (right-aligned
        // numbers), counted in characters (`µ` is two bytes).
        for word in ["calls", "p50 µs", "errors", "drops", "skipped"] {
            let end = header[..header.find(word).unwrap()].chars().count() + word.chars().count();
            for line in lines[1..].iter().filter(|l| !l.starts_with("    ")) {
                let line = chars(line);
                assert!(
                    line[end - 1] != ' ' && line[end] == ' ',
                    "`{word}` column misaligned:\n{header}\n{}",
                    line.iter().collect::<String>()
                );
            }
        }
    }
}
