//! `tool-guard`: a hookbus filter hook that denies coding agents' tool calls by
//! rules, with a reason the agent can act on.
//!
//! It reads the requests `hookbus agent-hook` sends for an event that gates a
//! tool (subject `agent.<agent>.<event>.<tool>`), whose body gives every agent's
//! event the same fields: `command` (the shell command a tool runs), `paths`
//! (the files a tool writes, absolute), `cwd` (the project). A request it drops
//! is a denial: the agent sees the reason.
//!
//! Rules (config, all optional):
//! - `recursive_delete`: `outside_project` (default) denies `rm -r` of anything
//!   not inside `cwd` (and of `cwd` itself); `always` denies every recursive
//!   delete; `allow` none.
//! - `protected_paths`: globs (`*` within a path segment, `**` across, `~` the
//!   home directory) no tool may write, by a file tool or a shell redirection
//!   (`>`, `>>`, `tee`). Default: `~/.ssh/**`, `~/.aws/**`, `~/.gnupg/**`,
//!   `/etc/**`, `**/.git/**`, `**/.env`.
//! - `deny_commands`: `[{pattern, reason}]`, regular expressions on the command.
//! - `home`: the home directory for `~` (default: `$HOME`, granted with
//!   `grants: {env: [HOME]}`).

use std::cell::RefCell;

use regex::Regex;
use serde_json::Value;

wit_bindgen::generate!({ world: "hook", path: "../../wit" });

use hookbus::hook::host::{log, Level};

const DEFAULT_PROTECTED: &[&str] = &[
    "~/.ssh/**",
    "~/.aws/**",
    "~/.gnupg/**",
    "/etc/**",
    "**/.git/**",
    "**/.env",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum RecursiveDelete {
    OutsideProject,
    Always,
    Allow,
}

struct Rule {
    regex: Regex,
    reason: String,
}

struct Guard {
    recursive_delete: RecursiveDelete,
    protected: Vec<String>,
    rules: Vec<Rule>,
    home: String,
}

thread_local! {
    static GUARD: RefCell<Option<Guard>> = const { RefCell::new(None) };
}

struct ToolGuard;

impl Guest for ToolGuard {
    fn init(config: String) -> Result<(), String> {
        let guard = Guard::from_config(&config)?;
        log(
            Level::Info,
            &format!(
                "tool-guard: recursive deletes {:?}, {} protected paths, {} command rules",
                guard.recursive_delete,
                guard.protected.len(),
                guard.rules.len()
            ),
        );
        GUARD.with(|g| *g.borrow_mut() = Some(guard));
        Ok(())
    }

    fn handle(msg: Message) -> Verdict {
        GUARD.with(|g| match g.borrow().as_ref() {
            Some(guard) => match guard.check(&msg.json) {
                Some(reason) => Verdict::Drop(reason),
                None => Verdict::Pass,
            },
            None => Verdict::Pass,
        })
    }
}

export!(ToolGuard);

impl Guard {
    fn from_config(text: &str) -> Result<Guard, String> {
        let config: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).map_err(|e| format!("config: {e}"))?
        };
        let recursive_delete = match config["recursive_delete"].as_str() {
            None | Some("outside_project") => RecursiveDelete::OutsideProject,
            Some("always") => RecursiveDelete::Always,
            Some("allow") => RecursiveDelete::Allow,
            Some(other) => {
                return Err(format!(
                    "config: recursive_delete is outside_project, always or allow, not {other:?}"
                ))
            }
        };
        let protected = match &config["protected_paths"] {
            Value::Null => DEFAULT_PROTECTED.iter().map(|s| s.to_string()).collect(),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or("config: protected_paths are strings"))
                .collect::<Result<_, _>>()?,
            _ => return Err("config: protected_paths is a list of globs".into()),
        };
        let mut rules = Vec::new();
        for rule in config["deny_commands"].as_array().into_iter().flatten() {
            let pattern = rule["pattern"]
                .as_str()
                .ok_or("config: each deny_commands entry needs a `pattern`")?;
            let regex = Regex::new(pattern).map_err(|e| format!("config: pattern {pattern:?}: {e}"))?;
            let reason = rule["reason"]
                .as_str()
                .map_or_else(|| format!("the command matches the denied pattern {pattern:?}"), str::to_owned);
            rules.push(Rule { regex, reason });
        }
        let home = config["home"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| std::env::var("HOME").ok())
            .unwrap_or_default();
        Ok(Guard {
            recursive_delete,
            protected,
            rules,
            home,
        })
    }

    /// Why the request in `json` must be denied, if it must.
    fn check(&self, json: &str) -> Option<String> {
        let frame: Value = serde_json::from_str(json).ok()?;
        let body = &frame["body"];
        let cwd = body["cwd"].as_str();
        if let Some(command) = body["command"].as_str() {
            if let Some(reason) = self.check_command(command, cwd) {
                return Some(reason);
            }
        }
        for path in body["paths"].as_array().into_iter().flatten() {
            if let Some(path) = path.as_str() {
                if let Some(reason) = self.check_write(path, cwd) {
                    return Some(reason);
                }
            }
        }
        None
    }

    fn check_command(&self, command: &str, cwd: Option<&str>) -> Option<String> {
        for rule in &self.rules {
            if rule.regex.is_match(command) {
                return Some(format!("tool-guard: {}", rule.reason));
            }
        }
        for words in simple_commands(command) {
            let mut args = words.iter().map(String::as_str).skip_while(|w| {
                w.contains('=') && !w.starts_with('-') || matches!(*w, "sudo" | "command" | "exec" | "nohup" | "time")
            });
            let Some(program) = args.next() else { continue };
            let args: Vec<&str> = args.collect();
            let name = program.rsplit('/').next().unwrap_or(program);
            if name == "rm" {
                if let Some(reason) = self.check_rm(&args, cwd) {
                    return Some(reason);
                }
            }
            // Writes by redirection or tee.
            let mut targets = Vec::new();
            let mut iter = words.iter().peekable();
            while let Some(w) = iter.next() {
                if let Some(t) = w.strip_prefix(">>").or_else(|| w.strip_prefix('>')) {
                    match t {
                        "" => targets.extend(iter.next().cloned()),
                        t => targets.push(t.to_owned()),
                    }
                }
            }
            if name == "tee" {
                targets.extend(args.iter().filter(|a| !a.starts_with('-')).map(|a| a.to_string()));
            }
            for t in targets {
                if let Some(reason) = self.check_write(&t, cwd) {
                    return Some(reason);
                }
            }
        }
        None
    }

    fn check_rm(&self, args: &[&str], cwd: Option<&str>) -> Option<String> {
        let recursive = args.iter().any(|a| {
            *a == "--recursive" || (a.starts_with('-') && !a.starts_with("--") && a.contains(['r', 'R']))
        });
        if !recursive || self.recursive_delete == RecursiveDelete::Allow {
            return None;
        }
        let targets: Vec<&str> = args.iter().copied().filter(|a| !a.starts_with('-')).collect();
        if self.recursive_delete == RecursiveDelete::Always {
            return Some(format!(
                "tool-guard: recursive deletes are not allowed here (rm -r {}): ask the user to delete it",
                targets.join(" ")
            ));
        }
        let Some(cwd) = cwd.filter(|c| c.starts_with('/')) else {
            return Some("tool-guard: a recursive delete with no known project directory: ask the user to do it".into());
        };
        let project = normalize(cwd, "/");
        for t in targets {
            let path = normalize(&self.expand(t), &project);
            let inside = path.len() > project.len()
                && path.starts_with(&project)
                && (project == "/" || path.as_bytes()[project.len()] == b'/');
            if !inside || project == "/" {
                return Some(format!(
                    "tool-guard: recursive delete of {t} ({path}) is outside the project {project}: delete only inside the project, or ask the user to do it"
                ));
            }
        }
        None
    }

    fn check_write(&self, path: &str, cwd: Option<&str>) -> Option<String> {
        let path = normalize(&self.expand(path), cwd.unwrap_or("/"));
        for glob in &self.protected {
            let pattern = self.expand(glob);
            if glob_match(&pattern, &path) {
                return Some(format!(
                    "tool-guard: {path} is protected (matches {glob}): agents may not write it; ask the user"
                ));
            }
        }
        None
    }

    /// `~` and `$HOME` at the start of `path`, expanded.
    fn expand(&self, path: &str) -> String {
        for prefix in ["~", "$HOME", "${HOME}"] {
            if let Some(rest) = path.strip_prefix(prefix) {
                if rest.is_empty() || rest.starts_with('/') {
                    return format!("{}{rest}", self.home);
                }
            }
        }
        path.to_owned()
    }
}

/// `path` made absolute against `cwd`, `.` and `..` resolved, no trailing `/`.
fn normalize(path: &str, cwd: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The simple commands of a shell line: split at `;`, `&`, `|`, newlines and
/// `(`, `)`, each into words, with quotes and backslashes honoured. A guard,
/// not a shell: it errs on the side of seeing more commands.
fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let end_word = |word: &mut String, words: &mut Vec<String>, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            ';' | '&' | '|' | '\n' | '(' | ')' | '`' => {
                end_word(&mut word, &mut words, &mut in_word);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            c if c.is_whitespace() => end_word(&mut word, &mut words, &mut in_word),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut word, &mut words, &mut in_word);
    if !words.is_empty() {
        commands.push(words);
    }
    commands
}

/// Glob match on paths: `**` any run of characters, `*` any within one segment,
/// `?` one character but `/`.
fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let mut rest = &p[2..];
                // `**/x` also matches `x` at the top.
                if rest.first() == Some(&b'/') && go(&rest[1..], s) {
                    return true;
                }
                if rest.is_empty() {
                    return true;
                }
                rest = &p[2..];
                (0..=s.len()).any(|i| go(rest, &s[i..]))
            }
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && s[0] != b'/' && go(&p[1..], &s[1..]),
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        let mut g = Guard::from_config(
            r#"{"home": "/home/u", "deny_commands": [{"pattern": "\\bgit\\s+push\\s+.*--force", "reason": "no force pushes"}]}"#,
        )
        .unwrap();
        g.home = "/home/u".into();
        g
    }

    fn request(body: Value) -> String {
        serde_json::json!({"type": "request", "subject": "agent.claude.PreToolUse.Bash", "body": body}).to_string()
    }

    #[test]
    fn recursive_deletes_outside_the_project_are_denied() {
        let g = guard();
        let deny = |command: &str| g.check(&request(serde_json::json!({"command": command, "cwd": "/home/u/proj"})));
        assert!(deny("rm -rf /").is_some());
        assert!(deny("rm -rf ~").is_some());
        assert!(deny("cd x && rm -r -f ../other").is_some());
        assert!(deny("sudo rm --recursive /var/lib").is_some());
        assert!(deny("rm -rf .").is_some(), "the project itself");
        assert!(deny("echo hi; /bin/rm -Rf \"$HOME\"").is_some());
        assert!(deny("rm -rf build target/debug").is_none());
        assert!(deny("rm -rf /home/u/proj/build").is_none());
        assert!(deny("rm notes.txt /tmp/x").is_none(), "not recursive");
        assert!(deny("echo 'rm -rf /'").is_none(), "quoted text is not a command");
        assert!(deny("git push origin main --force").unwrap().contains("no force pushes"));
        assert!(deny("cat key > ~/.ssh/authorized_keys").is_some());
        assert!(deny("echo x | tee -a /etc/hosts").is_some());
        assert!(deny("echo x > out.txt").is_none());
    }

    #[test]
    fn protected_paths_are_not_written() {
        let g = guard();
        let write = |path: &str| g.check(&request(serde_json::json!({"paths": [path], "cwd": "/home/u/proj"})));
        assert!(write("/home/u/.ssh/config").is_some());
        assert!(write("/home/u/proj/.env").is_some());
        assert!(write("/home/u/proj/.git/config").is_some());
        assert!(write("/etc/passwd").is_some());
        assert!(write("/home/u/proj/src/main.rs").is_none());
        assert!(write("/home/u/proj/.envrc").is_none());
    }

    #[test]
    fn globs() {
        assert!(glob_match("**/.env", "/a/b/.env"));
        assert!(glob_match("/etc/**", "/etc/x/y"));
        assert!(!glob_match("/etc/*", "/etc/x/y"));
        assert!(glob_match("/a/*.rs", "/a/m.rs"));
    }
}
