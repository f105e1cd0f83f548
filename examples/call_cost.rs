//! The cost of one hook call in-process, without sockets: for each WASM filter of a
//! hooks.yaml, the mean time of the host's whole per-message path (`hooks::call`:
//! the routing-field read, the pool, the call, the counters) over a 100-byte-body
//! message, of the routing-field read alone, and of the filter chain as the daemon
//! runs it on batches of 1, 16 and 64 messages (guests with `handle-batch` get one
//! call per batch). Compare with the no-hook bus's cost
//! per message (1 / its msg/s in BENCHMARKS.md).
//!
//! cargo run --release --example call_cost -- hooks.yaml [calls]

use std::sync::Arc;
use std::time::Instant;

use hookbus::hooks::config::{self, HookSource, Phase, Runner};
use hookbus::hooks::wasm::{self, WasmEngine};
use hookbus::hooks::{self, CallContext, EmitSink, Fields, HookSet, Pending};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: call_cost HOOKS.yaml [CALLS]"))?;
    let calls: u32 = args.next().map_or(Ok(200_000), |n| n.parse())?;
    let message = format!(
        r#"{{"type":"message","to":"rx","from":"bench","id":"0123456789abcdef","ts":1.0,"body":{{"t":"00000000000000012345","pad":"{}"}}}}"#,
        "x".repeat(66)
    );

    let fields_ns = time(calls, || {
        std::hint::black_box(Fields::parse(std::hint::black_box(&message)).strs());
    });
    println!("routing-field read alone: {fields_ns:.0} ns");

    let engine = WasmEngine::new(wasm::default_cache_dir())?;
    let emit: EmitSink = Arc::new(|_: &str, _: String, _: u8| Ok(()));
    let configs = config::load(&HookSource::File(path.into()))?;
    for hook in configs {
        if !matches!(hook.runner, Runner::Wasm(_)) || hook.phase != Phase::Filter {
            continue;
        }
        let name = hook.name.clone();
        let max_frame = hookbus::frame::DEFAULT_MAX_FRAME_LEN;
        let set =
            HookSet::build(1, vec![hook], &HookSet::empty(), &engine, &emit, max_frame).await?;
        let cx = CallContext {
            engine: &engine,
            emit: &emit,
            max_frame,
        };
        let fields = Fields::parse(&message).strs();
        // Warm up: instance made, code paged in.
        for _ in 0..1000 {
            hooks::call(&set.hooks[0], &message, &fields, 0, &cx)
                .await
                .ok();
        }
        let start = Instant::now();
        for _ in 0..calls {
            let fields = Fields::parse(&message).strs();
            std::hint::black_box(
                hooks::call(&set.hooks[0], &message, &fields, 0, &cx)
                    .await
                    .ok(),
            );
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(calls);
        println!("{name:<24} {ns:>8.0} ns per message (routing-field read + call)");

        // The filter chain as the daemon runs it, on batches of one read's messages.
        let frame = hookbus::frame::encode(message.as_bytes());
        for batch in [1u32, 16, 64] {
            let start = Instant::now();
            for _ in 0..calls / batch {
                let mut items: Vec<Pending> = (0..batch)
                    .map(|_| Pending::from_frame(frame.clone(), 0))
                    .collect();
                hooks::run_filters(&set, &mut items, &cx).await;
                std::hint::black_box(&items);
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(calls / batch * batch);
            println!("{:<24} {ns:>8.0} ns per message in batches of {batch}", "");
        }
    }
    Ok(())
}

fn time(calls: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}
