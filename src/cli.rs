//! The `hookbus` command line.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use tracing_subscriber::EnvFilter;

use crate::bench::{self, BenchOptions};
use hookbus::client::{self, ClientOptions, Sent};
use hookbus::daemon::{self, StartOptions, Stopped};
use hookbus::server::Config;

/// A fast, safe, extensible message bus for your workstation.
///
/// Programs connect to a Unix socket, register an endpoint name and exchange JSON
/// messages (4-byte big-endian length + JSON), point to point or as broadcasts.
/// The wire protocol is compatible with the Python hermes-bus 0.7 package.
#[derive(Debug, Parser)]
#[command(
    name = "hookbus",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Bus socket [default: $XDG_RUNTIME_DIR/hookbus/bus.sock, or ~/.hookbus/bus.sock]
    #[arg(long, global = true, env = hookbus::paths::SOCKET_ENV, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Be hermes-bus: its socket ($HERMES_BUS_ROOT or ~/.hermes, hermes-bus.sock), its
    /// busd's pid and log files (run/ beside it), and for `serve`, when no other hooks
    /// are given, its hooks file ($HERMES_HOME/hermes-bus/hooks.yaml)
    #[arg(long, global = true, env = "HOOKBUS_HERMES")]
    hermes: bool,

    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Worker threads for the async runtime: 1 runs everything on one thread
    /// (fastest for a workstation's traffic, see BENCHMARKS.md), 0 uses one per
    /// core
    #[arg(
        long,
        global = true,
        env = "HOOKBUS_THREADS",
        value_name = "N",
        default_value_t = 1
    )]
    threads: usize,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bus in the foreground (stop it with Ctrl-C or SIGTERM)
    Serve(ServeArgs),
    /// Run the bus in the background: start, stop, status, restart
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Send one message to an endpoint and report whether it was delivered
    #[command(
        after_help = "Examples:\n  hookbus send editor '{\"text\":\"build done\"}'\n  echo '{\"n\":1}' | hookbus send editor"
    )]
    Send {
        /// Endpoint to send to
        to: String,
        /// Message body as JSON; read from stdin when omitted
        body: Option<String>,
        /// Value of the message's `from` field
        #[arg(long, default_value = "cli")]
        from: String,
    },
    /// Send one message to every registered endpoint
    Broadcast {
        /// Message body as JSON; read from stdin when omitted
        body: Option<String>,
        /// Value of the message's `from` field
        #[arg(long, default_value = "cli")]
        from: String,
    },
    /// Register an endpoint and print every message it receives as a JSON line
    Listen {
        /// Endpoint name to register
        name: String,
        /// Start the daemon if none is running
        #[arg(long)]
        autostart: bool,
        /// When another connection registers NAME, register it again instead of
        /// stopping (two such listeners keep taking the name from each other)
        #[arg(long)]
        take_over: bool,
    },
    /// List registered endpoints and their session ids
    Endpoints {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Measure throughput, latency and memory of hookbus or any hermes-protocol bus
    Bench(BenchArgs),
    /// Check, inspect and test hooks
    #[command(subcommand)]
    Hooks(crate::hooks_cli::HooksCommand),
    #[command(flatten)]
    Topics(crate::topics_cli::TopicsCommand),
    /// The durable key-value store: get, put, del, ls, watch
    #[command(subcommand)]
    Kv(crate::kv_cli::KvCommand),
    /// Durable jobs with leases: publish, claim, work, list, status, retry, cancel
    #[command(subcommand)]
    Jobs(crate::jobs_cli::JobsCommand),
    /// Streams of kept publishes: ls, info, replay, consume
    #[command(subcommand)]
    Stream(crate::streams_cli::StreamCommand),
    /// Stand in for hermes-bus: its daemon commands, and a `hermes-busd` on PATH
    #[command(subcommand)]
    Hermes(crate::hermes_cli::HermesCommand),
    /// The hook program of coding agents (Claude Code, Hermes Agent, Codex, Gemini
    /// CLI): reads the agent's event on stdin, asks the bus, prints its decision
    #[command(
        after_help = "An event that gates a tool (PreToolUse, pre_tool_call, BeforeTool) is sent as a\nrequest on agent.<agent>.<event>[.<tool>]: a filter hook that drops it denies the tool\nwith its reason; a responder on the subject may answer\n{\"decision\":\"allow\"|\"deny\"|\"ask\",\"reason\":…}. Every event is then published on that\nsubject with its decision (`hookbus tail 'agent.>'`). See docs/AGENTS.md.\nExamples:\n  hookbus agent-hook install --agent claude\n  hookbus agent-hook --agent claude < tests/fixtures/agents/claude-pretooluse-bash.json"
    )]
    AgentHook(crate::agents::AgentHookArgs),
}

impl Cli {
    /// `--socket`, else hermes-bus's socket with `--hermes`, else the default.
    fn bus_socket(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(if self.hermes {
            hookbus::paths::hermes_socket
        } else {
            hookbus::paths::default_socket
        })
    }
}

/// The global options a detached daemon is started with.
#[derive(Debug)]
pub(crate) struct Globals {
    log_level: Option<String>,
    threads: usize,
    hermes: bool,
}

#[derive(Debug, Subcommand)]
enum DaemonCommand {
    /// Start a detached daemon and wait until it answers
    Start(ServeArgs),
    /// Stop the daemon (SIGTERM; it drains its connections and removes its socket)
    Stop,
    /// Show pid, uptime, socket, endpoints and counters (exit code 3 when not running)
    Status {
        /// Print the raw JSON status
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon if it runs, then start it
    Restart(ServeArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// hooks.yaml to load (after $HOOKBUS_HOOKS and $HERMES_BUS_HOOKS; before
    /// $XDG_CONFIG_HOME/hookbus/hooks.yaml)
    #[arg(long, value_name = "FILE")]
    hooks: Option<PathBuf>,
    /// Directory for compiled hook modules [default: $XDG_CACHE_HOME/hookbus/wasm]
    #[arg(long, value_name = "DIR")]
    hook_cache: Option<PathBuf>,
    /// Largest accepted frame payload, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = hookbus::frame::DEFAULT_MAX_FRAME_LEN)]
    max_frame: usize,
    /// Close registered sessions silent (no ping, no message) for this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 90.0)]
    heartbeat_timeout: f64,
    /// Frames queued for one client; past half of it, its senders are held back
    #[arg(long, value_name = "N", default_value_t = hookbus::outbox::OUTBOX_CAPACITY)]
    outbox_frames: usize,
    /// Bytes queued for one client; past half of it, its senders are held back
    #[arg(long, value_name = "BYTES", default_value_t = hookbus::outbox::OUTBOX_MAX_BYTES)]
    outbox_bytes: usize,
    /// After SIGTERM, stop within this many seconds whatever clients and hooks do
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    shutdown_timeout: f64,
    /// Disconnect a receiver that reads nothing for this many seconds while messages
    /// wait for it (its senders are held back meanwhile)
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    slow_consumer_timeout: f64,
    /// Close a connection that takes longer than this many seconds to send one frame
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    frame_timeout: f64,
    /// Bytes the bus may hold for all its clients together (frames being read, on
    /// their way and queued); past it, reading pauses. At least twice --max-frame
    #[arg(long, value_name = "BYTES", default_value_t = hookbus::budget::DEFAULT_MEMORY_BUDGET)]
    memory_budget: usize,
    /// After the bus's last work, go on polling the sockets for this many
    /// microseconds before sleeping (single-threaded runtime only; 0 sleeps at
    /// once). Saves the wake-up of each crossing of a busy conversation for
    /// that much CPU time
    #[arg(long, value_name = "MICROS", default_value_t = 50)]
    spin_us: u64,
    /// Directory of the durable store (KV) [default: $XDG_STATE_HOME/hookbus, or
    /// ~/.local/state/hookbus]
    #[arg(long, value_name = "DIR", conflicts_with = "no_store")]
    state_dir: Option<PathBuf>,
    /// How hard a store commit syncs: `full` survives power loss, `normal`
    /// survives a crash of the daemon and commits faster
    #[arg(long, value_enum, default_value_t = hookbus::store::SyncPolicy::Full)]
    sync: hookbus::store::SyncPolicy,
    /// Run without a durable store: persistent requests are refused
    #[arg(long)]
    no_store: bool,
    /// Days finished jobs (done, dead, cancelled) are kept
    #[arg(long, value_name = "DAYS", default_value_t = 7.0)]
    job_retention: f64,
    /// Seconds a job's idempotency key is remembered
    #[arg(long, value_name = "SECS", default_value_t = 3600.0)]
    idempotency_ttl: f64,
    /// Bytes of stream appends the store may have waiting to be committed before
    /// the clients publishing to streams are held back (until it is below half)
    #[arg(long, value_name = "BYTES", default_value_t = hookbus::store::APPEND_BACKLOG_HIGH)]
    append_backlog: usize,
    /// Streams to keep (YAML: `streams: [{name, subjects, max_messages, max_bytes,
    /// max_age_s}]`) [default: $XDG_CONFIG_HOME/hookbus/streams.yaml, if it exists]
    #[arg(long, value_name = "FILE", env = "HOOKBUS_STREAMS")]
    streams: Option<PathBuf>,
}

impl ServeArgs {
    fn config(&self, socket: &Path) -> anyhow::Result<Config> {
        if !(self.heartbeat_timeout.is_finite() && self.heartbeat_timeout > 0.0) {
            bail!("--heartbeat-timeout must be a positive number of seconds");
        }
        for (flag, secs) in [
            ("--shutdown-timeout", self.shutdown_timeout),
            ("--frame-timeout", self.frame_timeout),
            ("--slow-consumer-timeout", self.slow_consumer_timeout),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                bail!("{flag} must be a positive number of seconds");
            }
        }
        let least = self.max_frame.saturating_add(4).saturating_mul(2);
        if self.memory_budget < least {
            bail!(
                "--memory-budget {} is too small for --max-frame {}: give at least {least} bytes",
                self.memory_budget,
                self.max_frame
            );
        }
        let mut config = Config::new(socket);
        config.memory_budget = self.memory_budget;
        config.max_frame_len = self.max_frame;
        config.heartbeat_timeout = Duration::from_secs_f64(self.heartbeat_timeout);
        config.outbox_capacity = self.outbox_frames;
        config.outbox_max_bytes = self.outbox_bytes;
        config.shutdown_timeout = Duration::from_secs_f64(self.shutdown_timeout);
        config.frame_timeout = Duration::from_secs_f64(self.frame_timeout);
        config.slow_consumer_timeout = Duration::from_secs_f64(self.slow_consumer_timeout);
        config.spin = Duration::from_micros(self.spin_us);
        for (flag, n) in [
            ("--job-retention", self.job_retention),
            ("--idempotency-ttl", self.idempotency_ttl),
        ] {
            if !(n.is_finite() && n > 0.0) {
                bail!("{flag} must be a positive number");
            }
        }
        let streams_file = self.streams.clone().or_else(|| {
            let home = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
            Some(home.join("hookbus").join("streams.yaml")).filter(|p| p.exists())
        });
        let streams = match &streams_file {
            Some(file) => hookbus::store::streams::load_config(file).map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        config.store = (!self.no_store).then(|| hookbus::store::StoreConfig {
            streams,
            dir: self
                .state_dir
                .clone()
                .unwrap_or_else(hookbus::paths::state_dir),
            sync: self.sync,
            append_backlog: self.append_backlog,
            jobs: hookbus::store::jobs::JobsConfig {
                retention_ms: (self.job_retention * 86_400_000.0) as u64,
                idempotency_ms: (self.idempotency_ttl * 1000.0) as u64,
            },
        });
        Ok(config)
    }

    fn to_args(&self) -> Vec<String> {
        let absolute = |p: &PathBuf| std::env::current_dir().unwrap_or_default().join(p);
        let mut args: Vec<String> = self
            .hooks
            .iter()
            .map(|h| format!("--hooks={}", absolute(h).display()))
            .chain(
                self.hook_cache
                    .iter()
                    .map(|c| format!("--hook-cache={}", absolute(c).display())),
            )
            .chain(
                self.state_dir
                    .iter()
                    .map(|d| format!("--state-dir={}", absolute(d).display())),
            )
            .chain(
                self.streams
                    .iter()
                    .map(|s| format!("--streams={}", absolute(s).display())),
            )
            .collect();
        if self.no_store {
            args.push("--no-store".to_owned());
        }
        args.extend([
            format!("--max-frame={}", self.max_frame),
            format!("--heartbeat-timeout={}", self.heartbeat_timeout),
            format!("--outbox-frames={}", self.outbox_frames),
            format!("--outbox-bytes={}", self.outbox_bytes),
            format!("--shutdown-timeout={}", self.shutdown_timeout),
            format!("--frame-timeout={}", self.frame_timeout),
            format!("--slow-consumer-timeout={}", self.slow_consumer_timeout),
            format!("--spin-us={}", self.spin_us),
            format!("--memory-budget={}", self.memory_budget),
            format!("--sync={}", self.sync.name()),
            format!("--append-backlog={}", self.append_backlog),
            format!("--job-retention={}", self.job_retention),
            format!("--idempotency-ttl={}", self.idempotency_ttl),
        ]);
        args
    }
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Socket to measure; repeat to compare servers in one run (the first is the
    /// baseline) [default: the daemon's socket]
    #[arg(long = "target", value_name = "PATH")]
    targets: Vec<PathBuf>,
    /// Body sizes in bytes
    #[arg(long, value_delimiter = ',', default_value = "100,10240")]
    sizes: Vec<usize>,
    /// Receivers in the broadcast scenario (0 skips it)
    #[arg(long, default_value_t = 4)]
    fanout: usize,
    /// Messages per throughput run
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Messages per latency run (sent one at a time)
    #[arg(long, default_value_t = 10_000)]
    latency_samples: u64,
    /// Most messages in flight during a throughput run
    #[arg(long, default_value_t = 2_000)]
    window: u64,
    /// Idle registered connections opened to measure daemon memory (0 skips it;
    /// measures the first target, which must be hookbus)
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// Latency receivers sleep in `read` instead of polling, so each message also
    /// pays the generator's wake-up time
    #[arg(long)]
    blocking_receivers: bool,
    /// Messages the burst scenario sends in one write (0 skips it)
    #[arg(long, default_value_t = 20_000)]
    burst: u64,
    /// Skip the latency run beside a receiver that never reads
    #[arg(long)]
    no_stalled: bool,
    /// Skip the protocol-2 scenarios (publish/subscribe, request/reply)
    #[arg(long)]
    no_topics: bool,
    /// Skip the KV scenarios (durable puts, gets)
    #[arg(long)]
    no_kv: bool,
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Under an agent, clap's exit status 2 would read as "block this
            // tool": a bad flag or environment variable is a hook error (1).
            let args: Vec<String> = std::env::args().collect();
            let running_a_hook = args.iter().any(|a| a == "agent-hook")
                && !args.iter().any(|a| a == "install" || a == "uninstall");
            if running_a_hook && e.use_stderr() {
                let _ = e.print();
                return ExitCode::FAILURE;
            }
            e.exit()
        }
    };
    if matches!(cli.command, Command::AgentHook(_)) {
        // Runs on every tool call of an agent: no runtime, no logger.
        let socket = cli.bus_socket();
        let Command::AgentHook(args) = cli.command else {
            unreachable!("matched above")
        };
        return crate::agents::run(&socket, args).unwrap_or_else(|e| {
            eprintln!("hookbus: {e:#}");
            ExitCode::FAILURE
        });
    }
    let default_level = match cli.command {
        Command::Serve(_) | Command::Daemon(_) => "info",
        // A hook author sees what their guest writes to stderr.
        Command::Hooks(_) => "warn,hookbus::guest=info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.log_level.as_deref().unwrap_or(default_level)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let mut builder = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookbus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hookbus: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Whatever is still running (a hook call past its stop) does not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let socket = cli.bus_socket();
    let globals = Globals {
        log_level: cli.log_level.clone(),
        threads: cli.threads,
        hermes: cli.hermes,
    };
    match cli.command {
        Command::Serve(args) => {
            let mut config = args.config(&socket)?;
            config.hooks = hook_runtime(&args, config.max_frame_len, cli.hermes).await?;
            daemon::serve(config).await?;
        }
        Command::Hooks(command) => return crate::hooks_cli::run(&socket, command).await,
        Command::Daemon(DaemonCommand::Start(args)) => {
            return start(&socket, &args, &globals).await
        }
        Command::Daemon(DaemonCommand::Restart(args)) => {
            if let Stopped::Stopped { pid } = daemon::stop(&socket).await? {
                println!("stopped hookbus (pid {pid})");
            }
            return start(&socket, &args, &globals).await;
        }
        Command::Daemon(DaemonCommand::Stop) => match daemon::stop(&socket).await? {
            Stopped::Stopped { pid } => println!("stopped hookbus (pid {pid})"),
            Stopped::NotRunning => println!("hookbus is not running at {}", socket.display()),
        },
        Command::Daemon(DaemonCommand::Status { json }) => {
            match daemon::query_status(&socket).await {
                Ok(status) if json => println!("{status}"),
                Ok(status) => daemon::print_status(&mut std::io::stdout().lock(), &status)?,
                Err(client::ClientError::Connect { .. }) => {
                    println!(
                        "hookbus is not running at {}; start it with `hookbus daemon start`",
                        socket.display()
                    );
                    return Ok(ExitCode::from(3));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Send { to, body, from } => return send(&socket, &to, body, &from).await,
        Command::Broadcast { body, from } => return send(&socket, "", body, &from).await,
        Command::Listen {
            name,
            autostart,
            take_over,
        } => return listen(&socket, name, autostart, take_over).await,
        Command::Endpoints { json } => {
            let endpoints = client::endpoints(&socket).await?;
            if json {
                println!("{}", Value::Object(endpoints));
            } else if endpoints.is_empty() {
                println!("no endpoints registered");
            } else {
                let mut names: Vec<_> = endpoints.iter().collect();
                names.sort_by(|a, b| a.0.cmp(b.0));
                let width = names.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
                for (name, id) in names {
                    println!("{name:width$}  {}", id.as_str().unwrap_or_default());
                }
            }
        }
        Command::Bench(args) => bench_cmd(&socket, args).await?,
        Command::Topics(command) => return crate::topics_cli::run(&socket, command).await,
        Command::Kv(command) => return crate::kv_cli::run(&socket, command).await,
        Command::Jobs(command) => return crate::jobs_cli::run(&socket, command).await,
        Command::Stream(command) => return crate::streams_cli::run(&socket, command).await,
        Command::AgentHook(_) => unreachable!("run before the runtime starts"),
        Command::Hermes(command) => {
            // hermes-bus's files, whether or not --hermes was given.
            let socket = cli
                .socket
                .clone()
                .unwrap_or_else(hookbus::paths::hermes_socket);
            let globals = Globals {
                hermes: true,
                ..globals
            };
            return crate::hermes_cli::run(&socket, command, &globals).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The hook engine for `serve`, or `None` when hooks are switched off. A config
/// that cannot load stops the start: a bus must not run without the hooks (a
/// redaction filter, say) it was told to run.
async fn hook_runtime(
    args: &ServeArgs,
    max_frame: usize,
    hermes: bool,
) -> anyhow::Result<Option<std::sync::Arc<hookbus::hooks::runtime::HookRuntime>>> {
    use hookbus::hooks::{config, reload, runtime::HookRuntime, wasm};
    let hermes_hooks = hermes.then(hookbus::paths::hermes_hooks_file);
    let source = config::resolve_source(args.hooks.as_deref(), hermes_hooks.as_deref());
    if let config::HookSource::None { why } = &source {
        tracing::info!("no hooks: {why}");
        return Ok(None);
    }
    let cache = args.hook_cache.clone().or_else(wasm::default_cache_dir);
    let runtime = HookRuntime::new(source.clone(), cache, max_frame)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the hooks of {source} cannot be loaded, so the bus does not start: {e}"
            )
        })?;
    if let Err(e) = reload::watch(&runtime) {
        tracing::warn!("{e}");
    }
    Ok(Some(runtime))
}

async fn start(socket: &Path, args: &ServeArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let (status, started) = start_daemon(socket, args, globals).await?;
    let verb = if started {
        "started"
    } else {
        "already running:"
    };
    println!("hookbus {verb} pid {}", status["pid"]);
    println!("  socket: {}", socket.display());
    println!("  log:    {}", hookbus::paths::log_file(socket).display());
    Ok(ExitCode::SUCCESS)
}

/// Starts a detached daemon with `args` (and the global options) unless one
/// runs; its status, and whether it was started.
pub(crate) async fn start_daemon(
    socket: &Path,
    args: &ServeArgs,
    cli: &Globals,
) -> anyhow::Result<(Value, bool)> {
    args.config(socket)?; // validate before detaching
    let mut serve_args = args.to_args();
    if let Some(level) = &cli.log_level {
        serve_args.push(format!("--log-level={level}"));
    }
    serve_args.push(format!("--threads={}", cli.threads));
    if cli.hermes {
        serve_args.push("--hermes".to_owned());
    }
    Ok(daemon::start(socket, &StartOptions { serve_args }).await?)
}

/// Exit status of `send` and `broadcast` when a filter hook dropped the message.
const EXIT_DROPPED: u8 = 4;

/// The exit status of a store command: 0 when `done`, the code `codes` gives
/// the bus's error (1 for another), printed; other failures are errors.
pub(crate) fn exit_status(
    done: Result<(), hookbus::client::ClientError>,
    codes: &[(&str, u8)],
) -> anyhow::Result<ExitCode> {
    match done {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ hookbus::client::ClientError::Server { .. }) => {
            eprintln!("hookbus: {e}");
            let code = codes
                .iter()
                .find(|(name, _)| e.code() == Some(*name))
                .map_or(1, |(_, code)| *code);
            Ok(ExitCode::from(code))
        }
        Err(e) => Err(e.into()),
    }
}

/// A body given as an argument, or read from stdin when omitted, as JSON.
pub(crate) fn read_body(body: Option<String>) -> anyhow::Result<Value> {
    let text = match body {
        Some(text) => text,
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no message body: give it as an argument or on stdin, e.g. '{{\"text\":\"hi\"}}'");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the body from stdin")?;
            text
        }
    };
    serde_json::from_str(&text)
        .with_context(|| format!("the body is not valid JSON; quote it for the shell, e.g. '{{\"text\":\"hi\"}}' (got {text:?})"))
}

async fn send(
    socket: &Path,
    to: &str,
    body: Option<String>,
    from: &str,
) -> anyhow::Result<ExitCode> {
    let body = read_body(body)?;
    match client::send_message(socket, to, body, from).await {
        Ok(Sent::Delivered(n)) if to.is_empty() => println!("broadcast to {n} endpoint(s)"),
        Ok(Sent::Delivered(_)) => println!("delivered to {to}"),
        Ok(Sent::Accepted) => println!("sent (the bus does not confirm delivery)"),
        Ok(Sent::Dropped { hook, reason }) => {
            eprintln!("hookbus: dropped by hook {hook}: {reason}");
            return Ok(ExitCode::from(EXIT_DROPPED));
        }
        Err(e) if e.code() == Some("endpoint_not_found") => {
            eprintln!("hookbus: no endpoint `{to}` is connected; see `hookbus endpoints`");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status of `listen` when another connection took its endpoint.
const EXIT_REPLACED: u8 = 5;

/// Prints each message as a JSON line on stdout; error replies go to stderr.
async fn listen(
    socket: &Path,
    name: String,
    autostart: bool,
    take_over: bool,
) -> anyhow::Result<ExitCode> {
    let mut options = ClientOptions::new(socket, name);
    options.autostart = autostart;
    options.take_over = take_over;
    if let Ok(exe) = std::env::current_exe() {
        options.daemon_program = exe;
    }
    let mut client = client::Client::connect(options).await?;
    eprintln!(
        "listening as `{}` on {} (Ctrl-C to stop)",
        client.endpoint(),
        socket.display()
    );
    let mut stdout = std::io::stdout().lock();
    loop {
        tokio::select! {
            msg = client.recv() => {
                let Some(msg) = msg else {
                    return Ok(match client.ended() {
                        Some(detail) => {
                            eprintln!("hookbus: stopped listening as `{}`: {detail}; use --take-over to take the name back", client.endpoint());
                            ExitCode::from(EXIT_REPLACED)
                        }
                        None => ExitCode::SUCCESS,
                    });
                };
                if msg["type"] == "error" {
                    eprintln!(
                        "hookbus: {}: {}",
                        msg["code"].as_str().unwrap_or("error"),
                        msg["detail"].as_str().unwrap_or_default()
                    );
                    continue;
                }
                writeln!(stdout, "{msg}")?;
                stdout.flush()?;
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn bench_cmd(socket: &Path, args: BenchArgs) -> anyhow::Result<()> {
    let options = BenchOptions {
        targets: if args.targets.is_empty() {
            vec![socket.to_owned()]
        } else {
            args.targets
        },
        sizes: args.sizes,
        fanout: args.fanout,
        messages: args.messages,
        latency_samples: args.latency_samples,
        window: args.window.max(1),
        idle_connections: args.idle_connections,
        poll: !args.blocking_receivers,
        burst: args.burst,
        stalled: !args.no_stalled,
        topics: !args.no_topics,
        kv: !args.no_kv,
    };
    let topics = options.topics;
    let (rows, memory) = tokio::task::spawn_blocking(move || {
        bench::run(&options, |row| {
            if let Some(error) = &row.failed {
                eprintln!(
                    "{}: {} {} B: failed: {error}",
                    row.target.display(),
                    row.scenario,
                    row.size
                );
                return;
            }
            eprintln!(
                "{}: {} {} B: {:.0} msg/s, p50 {:.1} µs, p99 {:.1} µs",
                row.target.display(),
                row.scenario,
                row.size,
                row.msgs_per_sec,
                row.p50_us,
                row.p99_us
            )
        })
    })
    .await?
    .context("benchmark failed")?;
    print!("{}", bench::markdown(&rows, &memory, topics));
    Ok(())
}
