//! `hookbus jobs publish|claim|work|list|status|retry|cancel`: durable jobs
//! from the shell.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::cli::{exit_status, read_body};
use crate::topics_cli::run_command;
use hookbus::client::{Bus, ClientError};

/// Exit status of `claim` when no job came (2 is clap's, for a bad command line).
const EXIT_NO_JOB: u8 = 3;

fn ms(secs: f64, flag: &str) -> anyhow::Result<u64> {
    if !(secs.is_finite() && secs >= 0.0) {
        bail!("{flag} must be a number of seconds, 0 or more");
    }
    Ok((secs * 1000.0) as u64)
}

#[derive(Debug, Subcommand)]
#[command(
    after_help = "A job is claimed by one worker at a time, under a lease; it is requeued with\nbackoff when the lease expires, the worker's connection closes or it fails, and\nis dead after its last attempt (an event on `$jobs.<goal>.dead`)."
)]
pub enum JobsCommand {
    /// Queue a job and print its id
    #[command(allow_negative_numbers = true)]
    Publish {
        /// Goal: dot-separated tokens (workers claim by pattern)
        goal: String,
        /// Payload as JSON; read from stdin when omitted
        payload: Option<String>,
        /// Idempotency key: the same key and payload give the same job
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Higher goes first
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// Seconds before it may be claimed
        #[arg(long, value_name = "SECS", default_value_t = 0.0)]
        delay: f64,
        /// Attempts before it is dead
        #[arg(long, value_name = "N", default_value_t = 3)]
        max_attempts: u32,
        /// Seconds of backoff after a first failure (doubled after each)
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        backoff: f64,
    },
    /// Claim one job and print it as JSON (exit 3 when none came). The lease ends
    /// when this command exits, so the job is requeued: use it to look, and
    /// `work` (or a client that stays connected) to work
    Claim {
        /// Goal pattern (`*` one token, a last `>` the rest)
        goal: String,
        /// Seconds the lease lasts
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        lease: f64,
        /// Seconds to wait for a job
        #[arg(long, value_name = "SECS", default_value_t = 0.0)]
        wait: f64,
    },
    /// Claim jobs for ever and run a command for each
    #[command(
        after_help = "The command gets the payload as JSON on stdin. Exit 0 fulfils the job with its\nstdout (JSON, or else a string); anything else fails it with its stderr, to be\nretried. The lease is extended while the command runs.\nExample:\n  hookbus jobs work 'img.>' -- ./resize.sh"
    )]
    Work {
        goal: String,
        /// Seconds the lease lasts (extended every third of it while the command runs)
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        lease: f64,
        /// Seconds a command may run before it is killed and the job failed
        #[arg(long, value_name = "SECS", default_value_t = 3600.0)]
        command_timeout: f64,
        /// Stop after this many jobs
        #[arg(long, value_name = "N")]
        max_jobs: Option<u64>,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// List jobs, oldest first
    List {
        /// queued, leased, done, dead or cancelled
        #[arg(long)]
        state: Option<String>,
        /// Goal pattern
        #[arg(long)]
        goal: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Print one job as JSON
    Status { job: String },
    /// Queue a dead or cancelled job again, with its attempts reset
    Retry { job: String },
    /// Cancel a queued, leased or dead job
    Cancel { job: String },
}

pub async fn run(socket: &Path, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let bus = Bus::connect(socket, None, &["jobs"]).await?;
    let done = match command {
        JobsCommand::Publish {
            goal,
            payload,
            key,
            priority,
            delay,
            max_attempts,
            backoff,
        } => {
            let mut request = json!({
                "type": "job_publish", "goal": goal, "payload": read_body(payload)?,
                "priority": priority, "delay_ms": ms(delay, "--delay")?,
                "max_attempts": max_attempts, "backoff_ms": ms(backoff, "--backoff")?,
            });
            if let Some(key) = key {
                request["idempotency_key"] = key.into();
            }
            bus.call(request).await.map(|a| {
                let dup = if a["duplicate"] == true {
                    " (duplicate)"
                } else {
                    ""
                };
                println!("{}{dup}", a["job"].as_str().unwrap_or("?"));
            })
        }
        JobsCommand::Claim { goal, lease, wait } => {
            let wait_ms = ms(wait, "--wait")?;
            let request = json!({"type": "job_claim", "goal": goal, "lease_ms": ms(lease, "--lease")?.max(1), "wait_ms": wait_ms});
            match bus
                .call_waiting(request, Duration::from_millis(wait_ms))
                .await
            {
                Ok(a) if a["type"] == "no_job" => return Ok(ExitCode::from(EXIT_NO_JOB)),
                other => other.map(|a| println!("{a}")),
            }
        }
        JobsCommand::Work {
            goal,
            lease,
            command_timeout,
            max_jobs,
            command,
        } => {
            let lease_ms = ms(lease, "--lease")?.max(1000);
            let limit = Duration::from_millis(ms(command_timeout, "--command-timeout")?.max(1));
            work(&bus, &goal, lease_ms, limit, max_jobs, &command).await
        }
        JobsCommand::List {
            state,
            goal,
            limit,
            json,
        } => {
            let mut request = json!({"type": "job_list", "limit": limit});
            if let Some(s) = state {
                request["state"] = s.into();
            }
            if let Some(g) = goal {
                request["goal"] = g.into();
            }
            bus.call(request).await.map(|a| {
                let jobs = a["jobs"].as_array().cloned().unwrap_or_default();
                for j in jobs {
                    if json {
                        println!("{j}");
                    } else {
                        println!(
                            "{}  {:<9} {}/{}  {}",
                            j["job"].as_str().unwrap_or("?"),
                            j["state"].as_str().unwrap_or("?"),
                            j["attempt"],
                            j["max_attempts"],
                            j["goal"].as_str().unwrap_or("?")
                        );
                    }
                }
            })
        }
        JobsCommand::Status { job } => bus
            .call(json!({"type": "job_status", "job": job}))
            .await
            .map(|a| println!("{a}")),
        JobsCommand::Retry { job } => bus
            .call(json!({"type": "job_retry", "job": job}))
            .await
            .map(|_| println!("requeued {job}")),
        JobsCommand::Cancel { job } => bus
            .call(json!({"type": "job_cancel", "job": job}))
            .await
            .map(|_| println!("cancelled {job}")),
    };
    exit_status(done, &[])
}

/// Claims jobs on `goal` and runs `command` for each until `max_jobs` ran.
async fn work(
    bus: &Bus,
    goal: &str,
    lease_ms: u64,
    limit: Duration,
    max_jobs: Option<u64>,
    command: &[String],
) -> Result<(), ClientError> {
    const WAIT: Duration = Duration::from_secs(30);
    eprintln!("hookbus: working on `{goal}` with {:?}", command.join(" "));
    let mut ran = 0;
    while max_jobs.is_none_or(|max| ran < max) {
        let claim = json!({"type": "job_claim", "goal": goal, "lease_ms": lease_ms, "wait_ms": WAIT.as_millis() as u64});
        let job = bus.call_waiting(claim, WAIT).await?;
        if job["type"] != "job" {
            continue;
        }
        ran += 1;
        let (id, lease) = (job["job"].clone(), job["lease"].clone());
        let name = id.as_str().unwrap_or("?").to_owned();
        let run = run_command(command, &job["payload"], limit);
        tokio::pin!(run);
        let mut extend = tokio::time::interval(Duration::from_millis(lease_ms / 3));
        extend.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = extend.tick() => {
                    let r = bus.call(json!({"type": "job_extend", "job": id, "lease": lease, "lease_ms": lease_ms})).await;
                    if let Err(e) = r {
                        eprintln!("hookbus: job {name}: cannot extend its lease: {e}");
                    }
                }
            }
        };
        let answer = match outcome {
            Ok(result) => {
                bus.call(
                    json!({"type": "job_fulfill", "job": id, "lease": lease, "result": result}),
                )
                .await
            }
            Err(failed) => {
                let error = failed["error"].as_str().unwrap_or("failed").to_owned();
                bus.call(json!({"type": "job_fail", "job": id, "lease": lease, "error": error}))
                    .await
            }
        };
        let mut err = std::io::stderr().lock();
        let _ = match answer {
            Ok(a) => writeln!(
                err,
                "hookbus: job {name} (attempt {}): {}",
                job["attempt"],
                describe(&a)
            ),
            Err(e) => writeln!(err, "hookbus: job {name}: {e}"),
        };
    }
    Ok(())
}

fn describe(answer: &Value) -> String {
    match answer["type"].as_str() {
        Some("job_fulfilled") => "done".to_owned(),
        Some("job_failed") => format!("failed, {}", answer["state"].as_str().unwrap_or("?")),
        _ => answer.to_string(),
    }
}
