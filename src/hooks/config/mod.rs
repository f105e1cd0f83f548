//! hooks.yaml and env-var hook lists, validated into [`HookConfig`]s.
//!
//! - [`schema`]: the types of hooks.yaml, strict (`deny_unknown_fields`).
//! - [`source`]: where the hook list comes from (env vars, `--hooks`, the XDG
//!   config file, hermes-bus's forms) and loading it.
//! - [`validate`]: parsing with line numbers, checks and defaults.
//!
//! The schema is documented in docs/HOOKS.md and hooks/hooks.example.yaml.

mod schema;
mod source;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

pub use schema::*;
pub use source::*;
pub use validate::parse_file;

/// Env var naming the hooks: comma-separated paths or a JSON array; `none` or empty
/// disables hooks.
pub const HOOKS_ENV: &str = "HOOKBUS_HOOKS";
/// hermes-bus's env var, honoured when [`HOOKS_ENV`] is unset.
pub const HERMES_HOOKS_ENV: &str = "HERMES_BUS_HOOKS";

/// Default CPU deadline of a WASM or worker filter call.
pub const DEFAULT_FILTER_TIMEOUT: Duration = Duration::from_millis(5);
/// Default CPU deadline of a WASM notify call.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_millis(100);
/// Default time a subprocess has to answer (worker) or finish (spawn).
pub const DEFAULT_PROCESS_TIMEOUT: Duration = Duration::from_secs(5);
/// Default memory cap of a WASM hook instance.
pub const DEFAULT_MEMORY_MB: u64 = 32;
/// Default number of concurrent processes of a spawn hook.
pub const DEFAULT_SPAWN_CONCURRENCY: usize = 8;
/// Default runs a spawn hook's backlog holds (besides its byte cap).
pub const DEFAULT_SPAWN_BACKLOG: usize = 10_000;
/// Default live instances of a WASM hook.
pub const DEFAULT_INSTANCES: usize = 16;

/// A config that cannot be used; says where and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::source::{parse_env_list, resolve_source_from};
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Vec<HookConfig>, ConfigError> {
        parse_file(text, Path::new("/etc/hb/hooks.yaml"))
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("agent-*", "agent-7"));
        assert!(!glob("agent-*", "agen"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*.log*", "x.log.1"));
        assert!(!glob("a*b", "acbx"));
        assert!(glob("", ""));
        assert!(!glob("", "x"));
    }

    #[test]
    fn full_schema_with_defaults_and_relative_paths() {
        let hooks = parse(
            r#"
version: 1
hooks:
  - name: redact
    wasm: redact.wasm
    match: { type: message, to: "agent-*" }
    config: { patterns: ["sk-[a-z]+"] }
    limits: { timeout_ms: 3, memory_mb: 16 }
    grants:
      dirs: [{ host: data, guest: /data }]
      env: [HOME]
      routing: true
    on_error: drop
  - name: notify
    command: [./notify.sh, --quiet]
    env: { A: "1" }
  - name: worker
    command: [python3, w.py]
    mode: worker
"#,
        )
        .unwrap();
        assert_eq!(hooks.len(), 3);
        let r = &hooks[0];
        assert_eq!(r.runner, Runner::Wasm("/etc/hb/redact.wasm".into()));
        assert_eq!(r.phase, Phase::Filter);
        assert_eq!(r.timeout, Duration::from_millis(3));
        assert_eq!(r.memory_bytes, 16 << 20);
        assert_eq!(r.on_error, OnError::Drop);
        assert_eq!(r.config, r#"{"patterns":["sk-[a-z]+"]}"#);
        assert_eq!(r.grants.dirs[0].host, Path::new("/etc/hb/data"));
        assert!(r.matcher.matches("message", "agent-1", "x", None));
        assert!(!r.matcher.matches("message", "human", "x", None));
        assert_eq!(
            hooks[1].runner,
            Runner::Spawn(vec!["/etc/hb/./notify.sh".into(), "--quiet".into()])
        );
        assert_eq!(hooks[1].phase, Phase::Notify);
        assert_eq!(hooks[1].timeout, DEFAULT_PROCESS_TIMEOUT);
        assert_eq!(
            hooks[2].runner,
            Runner::Worker(vec!["python3".into(), "w.py".into()])
        );
        assert_eq!(hooks[2].phase, Phase::Filter);
    }

    #[test]
    fn unknown_keys_name_their_line() {
        let e = parse("hooks:\n  - name: a\n    wasm: a.wasm\n    phsae: filter\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("phsae"), "{e}");
        assert!(e.to_string().starts_with("/etc/hb/hooks.yaml:4:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_hook_and_line() {
        let e = parse("hooks:\n  - name: ok\n    wasm: a.wasm\n  - name: bad\n    command: [x]\n    phase: filter\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(
            e.message.contains("`bad`") && e.message.contains("worker"),
            "{e}"
        );
        let e = parse("hooks:\n  - name: a\n    wasm: a.wasm\n  - name: a\n    wasm: b.wasm\n")
            .unwrap_err();
        assert!(e.message.contains("unique"), "{e}");
        let e = parse("hooks:\n  - name: a\n").unwrap_err();
        assert!(e.message.contains("`wasm: FILE`"), "{e}");
        let e = parse("hooks:\n  - name: a\n    wasm: a.wasm\n    mode: worker\n").unwrap_err();
        assert!(e.message.contains("`mode`"), "{e}");
        let e = parse("hooks:\n  - name: a\n    command: [x]\n    grants: { clock: true }\n")
            .unwrap_err();
        assert!(e.message.contains("grants"), "{e}");
        let e = parse("version: 2\nhooks: []\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn hermes_bare_list() {
        let hooks =
            parse("# hermes style\n- /opt/hooks/notify.py\n- hooks/guard.wasm\n- ./run.sh\n")
                .unwrap();
        assert_eq!(
            hooks[0].runner,
            Runner::Spawn(vec!["python3".into(), "/opt/hooks/notify.py".into()])
        );
        assert_eq!(hooks[0].phase, Phase::Notify);
        assert_eq!(hooks[0].name, "notify");
        assert_eq!(
            hooks[1].runner,
            Runner::Wasm("/etc/hb/hooks/guard.wasm".into())
        );
        assert_eq!(hooks[1].phase, Phase::Filter);
        assert_eq!(
            hooks[2].runner,
            Runner::Spawn(vec!["/etc/hb/./run.sh".into()])
        );
    }

    #[test]
    fn an_empty_file_is_an_error_and_an_empty_list_means_no_hooks() {
        for empty in ["", "# nothing\n", "\n\n"] {
            let e = parse(empty).unwrap_err();
            assert!(e.message.contains("hooks: []"), "{e}");
        }
        assert!(parse("hooks: []\n").unwrap().is_empty());
    }

    #[test]
    fn source_resolution_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let flag = Path::new("/f/hooks.yaml");
        assert_eq!(
            resolve_source_from(
                Some(flag),
                env(&[("HOOKBUS_HOOKS", "a.wasm"), ("HERMES_BUS_HOOKS", "b.py")]),
                None
            ),
            HookSource::Env {
                var: HOOKS_ENV,
                value: "a.wasm".into()
            }
        );
        assert_eq!(
            resolve_source_from(Some(flag), env(&[("HERMES_BUS_HOOKS", "b.py")]), None),
            HookSource::Env {
                var: HERMES_HOOKS_ENV,
                value: "b.py".into()
            }
        );
        assert!(matches!(
            resolve_source_from(
                Some(flag),
                env(&[("HOOKBUS_HOOKS", "none"), ("HERMES_BUS_HOOKS", "b.py")]),
                None
            ),
            HookSource::None { .. }
        ));
        assert!(matches!(
            resolve_source_from(Some(flag), env(&[("HOOKBUS_HOOKS", "")]), None),
            HookSource::None { .. }
        ));
        assert_eq!(
            resolve_source_from(Some(flag), env(&[]), None),
            HookSource::File(flag.to_owned())
        );
        // A drop-in for hermes-bus reads its hooks file instead of hookbus's default.
        let hermes = Path::new("/h/hermes-bus/hooks.yaml");
        assert_eq!(
            resolve_source_from(None, env(&[("XDG_CONFIG_HOME", "/x")]), Some(hermes)),
            HookSource::Default(hermes.to_owned())
        );
        assert_eq!(
            resolve_source_from(Some(flag), env(&[]), Some(hermes)),
            HookSource::File(flag.to_owned())
        );
        assert_eq!(
            resolve_source_from(None, env(&[("XDG_CONFIG_HOME", "/nonexistent")]), None),
            HookSource::Default("/nonexistent/hookbus/hooks.yaml".into()),
            "a default file that does not exist yet is still the source"
        );
        assert!(load(&HookSource::Default("/nonexistent/hooks.yaml".into()))
            .unwrap()
            .is_empty());
        assert!(load(&HookSource::File("/nonexistent/hooks.yaml".into())).is_err());
    }

    #[test]
    fn env_lists() {
        assert_eq!(
            parse_env_list("a.wasm, b.py,,c").unwrap(),
            vec!["a.wasm", "b.py", "c"]
        );
        assert_eq!(
            parse_env_list(r#"["a b.wasm","c"]"#).unwrap(),
            vec!["a b.wasm", "c"]
        );
        assert!(parse_env_list("[oops").is_err());
        let hooks = load(&HookSource::Env {
            var: HOOKS_ENV,
            value: r#"["/x/f.wasm","/x/n.py"]"#.into(),
        })
        .unwrap();
        assert_eq!(hooks[0].runner, Runner::Wasm("/x/f.wasm".into()));
        assert_eq!(
            hooks[1].runner,
            Runner::Spawn(vec!["python3".into(), "/x/n.py".into()])
        );
    }
}
