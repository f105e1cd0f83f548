//! Parsing hooks.yaml with line numbers, validation and defaults.

use std::path::Path;
use std::time::Duration;

use super::source::{bare_path_hook, expand_home};
use super::*;

/// Parses hooks.yaml text (`path` names it in errors and anchors relative paths).
pub fn parse_file(text: &str, path: &Path) -> Result<Vec<HookConfig>, ConfigError> {
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let err = |line: Option<usize>, message: String| ConfigError {
        file: path.to_owned(),
        line,
        message,
    };
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, e))?;
    // hermes-bus's hooks.yaml: a bare list of script paths.
    if let serde_yaml_ng::Value::Sequence(items) = &value {
        let mut hooks = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(script) = item.as_str() else {
                return Err(err(
                    None,
                    format!("item {} of the hook list must be a path", i + 1),
                ));
            };
            hooks.push(bare_path_hook(&expand_home(script), &base, path)?);
        }
        check_unique(&hooks, path, Some(text))?;
        return Ok(hooks);
    }
    // An empty file is more often one caught half-saved than a wish for no hooks,
    // and taking it would switch every filter off: `hooks: []` says so on purpose.
    if value.is_null() {
        return Err(err(
            None,
            "the file is empty (or only comments); write `hooks: []` for no hooks".into(),
        ));
    }
    let file: HooksFile = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, e))?;
    if let Some(v) = file.version.filter(|&v| v != 1) {
        return Err(err(
            line_of(text, "version:"),
            format!("unsupported version {v}; this hookbus reads version 1"),
        ));
    }
    let mut hooks = Vec::new();
    for spec in file.hooks {
        let line = line_of(text, &format!("name: {}", spec.name));
        hooks.push(validate(spec, &base, path, line)?);
    }
    check_unique(&hooks, path, Some(text))?;
    Ok(hooks)
}

fn yaml_error(path: &Path, e: serde_yaml_ng::Error) -> ConfigError {
    ConfigError {
        file: path.to_owned(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    }
}

/// First line (1-based) containing `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

pub(super) fn check_unique(
    hooks: &[HookConfig],
    source: &Path,
    text: Option<&str>,
) -> Result<(), ConfigError> {
    for (i, hook) in hooks.iter().enumerate() {
        if hooks[..i].iter().any(|h| h.name == hook.name) {
            return Err(ConfigError {
                file: source.to_owned(),
                line: text.and_then(|t| line_of(t, &format!("name: {}", hook.name))),
                message: format!("two hooks are named `{}`; names must be unique", hook.name),
            });
        }
    }
    Ok(())
}

pub(super) fn validate(
    spec: HookSpec,
    base: &Path,
    source: &Path,
    line: Option<usize>,
) -> Result<HookConfig, ConfigError> {
    let name = spec.name.clone();
    let fail = |message: String| ConfigError {
        file: source.to_owned(),
        line,
        message: format!("hook `{name}`: {message}"),
    };
    if spec.name.trim().is_empty() {
        return Err(fail("`name` must not be empty".into()));
    }
    let runner = match (&spec.wasm, &spec.command) {
        (Some(_), Some(_)) => return Err(fail("give either `wasm` or `command`, not both".into())),
        (None, None) => {
            return Err(fail(
                "give `wasm: FILE` or `command: [PROGRAM, ARG…]`".into(),
            ))
        }
        (Some(path), None) => {
            if spec.mode.is_some() {
                return Err(fail("`mode` applies to `command` hooks only".into()));
            }
            if !spec.env.is_empty() || spec.cwd.is_some() {
                return Err(fail(
                    "`env` and `cwd` apply to `command` hooks; grant env vars with `grants.env`"
                        .into(),
                ));
            }
            Runner::Wasm(base.join(path))
        }
        (None, Some(argv)) => {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(fail("`command` must name a program".into()));
            }
            if !spec.grants.dirs.is_empty()
                || !spec.grants.env.is_empty()
                || spec.grants.clock.is_some()
                || spec.limits.instances.is_some()
            {
                return Err(fail(
                    "`grants.dirs`, `grants.env`, `grants.clock` and `limits.instances` apply to `wasm` hooks; \
                    a command runs with the daemon's rights, set its `env` and `cwd` instead"
                        .into(),
                ));
            }
            let mut argv = argv.clone();
            // A relative program path that exists beside the config runs from there.
            if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
                argv[0] = base.join(&argv[0]).to_string_lossy().into_owned();
            }
            match spec.mode.unwrap_or(Mode::Spawn) {
                Mode::Spawn => Runner::Spawn(argv),
                Mode::Worker => Runner::Worker(argv),
            }
        }
    };
    let phase = spec.phase.unwrap_or(match runner {
        Runner::Spawn(_) => Phase::Notify,
        _ => Phase::Filter,
    });
    if phase == Phase::Filter && matches!(runner, Runner::Spawn(_)) {
        return Err(fail(
            "a `spawn` command cannot be a filter (it would block routing); \
            use `mode: worker` or `phase: notify`"
                .into(),
        ));
    }
    let timeout = match (spec.limits.timeout_ms, &runner, phase) {
        (Some(0), ..) => return Err(fail("`limits.timeout_ms` must be at least 1".into())),
        (Some(ms), ..) => Duration::from_millis(ms),
        (None, Runner::Wasm(_), Phase::Filter) => DEFAULT_FILTER_TIMEOUT,
        (None, Runner::Wasm(_), Phase::Notify) => DEFAULT_NOTIFY_TIMEOUT,
        (None, ..) => DEFAULT_PROCESS_TIMEOUT,
    };
    let memory_mb = spec.limits.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if memory_mb == 0 || memory_mb > 4096 {
        return Err(fail("`limits.memory_mb` must be between 1 and 4096".into()));
    }
    let concurrency = spec.limits.concurrency.unwrap_or(DEFAULT_SPAWN_CONCURRENCY);
    if concurrency == 0 {
        return Err(fail("`limits.concurrency` must be at least 1".into()));
    }
    if !matches!(runner, Runner::Spawn(_))
        && (spec.limits.backlog.is_some() || spec.limits.overflow.is_some())
    {
        return Err(fail(
            "`limits.backlog` and `limits.overflow` apply to spawn hooks".into(),
        ));
    }
    let backlog = spec.limits.backlog.unwrap_or(DEFAULT_SPAWN_BACKLOG);
    if backlog == 0 {
        return Err(fail("`limits.backlog` must be at least 1".into()));
    }
    let instances = spec.limits.instances.unwrap_or(DEFAULT_INSTANCES);
    if instances == 0 {
        return Err(fail("`limits.instances` must be at least 1".into()));
    }
    if let Some(pattern) = &spec.matcher.subject {
        if let Err(e) = crate::subject::check_pattern(pattern) {
            return Err(fail(format!("`match.subject`: {e}")));
        }
    }
    let config = match &spec.config {
        None => "{}".to_owned(),
        Some(value) => value.to_string(),
    };
    let mut grants = spec.grants.clone();
    for dir in &mut grants.dirs {
        dir.host = base.join(&dir.host);
    }
    Ok(HookConfig {
        name: spec.name,
        runner,
        phase,
        matcher: spec.matcher,
        config,
        timeout,
        memory_bytes: (memory_mb as usize) << 20,
        concurrency,
        backlog,
        overflow: spec.limits.overflow.unwrap_or_default(),
        instances,
        grants,
        on_error: spec.on_error,
        env: spec.env,
        // Commands run in the config file's directory unless told otherwise, so
        // relative paths in `command` mean what they say.
        cwd: match spec.cwd {
            Some(cwd) => Some(base.join(cwd)),
            None if !base.as_os_str().is_empty() => Some(base.to_owned()),
            None => None,
        },
    })
}
