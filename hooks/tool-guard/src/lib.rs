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
        // Where the command runs: the tool's own directory, else the project.
        let workdir = body["workdir"].as_str().or(cwd);
        if let Some(command) = body["command"].as_str() {
            if let Some(reason) = self.check_command(command, cwd, workdir, 0) {
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

    /// `project` is the session's directory, `dir` where the command starts
    /// (`cd` in the line moves it; `None`: not known).
    fn check_command(
        &self,
        command: &str,
        project: Option<&str>,
        dir: Option<&str>,
        depth: u32,
    ) -> Option<String> {
        if depth > 8 {
            return Some("tool-guard: command substitutions nested too deep to check".into());
        }
        for rule in &self.rules {
            if rule.regex.is_match(command) {
                return Some(format!("tool-guard: {}", rule.reason));
            }
        }
        let (commands, substitutions) = simple_commands(command);
        for sub in substitutions {
            if let Some(reason) = self.check_command(&sub, project, dir, depth + 1) {
                return Some(reason);
            }
        }
        let mut dir: Option<String> = dir.map(str::to_owned);
        for words in commands {
            // Writes by redirection (`>`, `>>`, `>|`, `2>`, `&>`, …).
            let mut targets = Vec::new();
            let mut plain: Vec<&str> = Vec::new();
            let mut iter = words.iter();
            while let Some(w) = iter.next() {
                if w == REDIRECT {
                    targets.extend(iter.next().cloned());
                } else {
                    plain.push(w);
                }
            }
            let (program, args, from_stdin) = unwrap_command(&plain);
            let name = program.map(|p| p.rsplit('/').next().unwrap_or(p));
            match name {
                Some("cd" | "pushd") => {
                    dir = match args.first() {
                        None => Some(self.home.clone()),
                        Some(to) if known(to) && *to != "-" => self.resolve(to, dir.as_deref()),
                        Some(_) => None,
                    };
                }
                Some("rm") => {
                    if let Some(reason) =
                        self.check_rm(&args, from_stdin, project, dir.as_deref())
                    {
                        return Some(reason);
                    }
                }
                Some("tee") => {
                    targets.extend(args.iter().filter(|a| !a.starts_with('-')).map(|a| a.to_string()))
                }
                _ => {}
            }
            for t in targets {
                if let Some(path) = self.resolve(&t, dir.as_deref()) {
                    if let Some(reason) = self.check_write(&path, project) {
                        return Some(reason);
                    }
                }
            }
        }
        None
    }

    fn check_rm(
        &self,
        args: &[&str],
        from_stdin: bool,
        project: Option<&str>,
        dir: Option<&str>,
    ) -> Option<String> {
        let mut recursive = false;
        let mut targets = Vec::new();
        let mut options = true;
        for a in args {
            if options && *a == "--" {
                options = false;
            } else if options && a.starts_with("--") {
                // Long options may be abbreviated: --recur is --recursive.
                recursive |= a.len() >= 4 && "--recursive".starts_with(*a);
            } else if options && a.starts_with('-') && a.len() > 1 {
                recursive |= a.contains(['r', 'R']);
            } else {
                targets.push(*a);
            }
        }
        // What a delete removes, protected paths included, whether or not recursive.
        for t in &targets {
            if let Some(path) = self.resolve(t, dir) {
                if let Some(glob) = self.protected_by(&path, true) {
                    return Some(format!(
                        "tool-guard: deleting {t} ({path}) is not allowed: it holds protected files ({glob}); ask the user"
                    ));
                }
            }
        }
        if !recursive || self.recursive_delete == RecursiveDelete::Allow {
            return None;
        }
        if self.recursive_delete == RecursiveDelete::Always {
            return Some(format!(
                "tool-guard: recursive deletes are not allowed here (rm -r {}): ask the user to delete it",
                targets.join(" ")
            ));
        }
        if from_stdin {
            return Some("tool-guard: a recursive delete of paths read from stdin (xargs): the targets cannot be checked; delete named paths inside the project".into());
        }
        let Some(project) = project.filter(|c| c.starts_with('/')) else {
            return Some("tool-guard: a recursive delete with no known project directory: ask the user to do it".into());
        };
        let project = normalize(project, "/");
        for t in targets {
            if !known(t) {
                return Some(format!(
                    "tool-guard: recursive delete of {t}: where it points cannot be told (a variable, `~user` or braces); name the path inside the project {project}"
                ));
            }
            let Some(dir) = dir else {
                return Some(format!(
                    "tool-guard: recursive delete of {t} after a `cd` whose target cannot be told: name the path inside the project {project}"
                ));
            };
            // A glob deletes within the directory before its first wildcard.
            let fixed = match t.find(['*', '?', '[']) {
                Some(at) => &t[..at],
                None => t,
            };
            let path = normalize(&self.expand(fixed), dir);
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

    /// Where `word` points from `dir`, when that can be told.
    fn resolve(&self, word: &str, dir: Option<&str>) -> Option<String> {
        if !known(word) {
            return None;
        }
        let expanded = self.expand(word);
        if expanded.starts_with('/') {
            Some(normalize(&expanded, "/"))
        } else {
            dir.map(|d| normalize(&expanded, d))
        }
    }

    /// The protected glob `path` matches (or, for a directory being deleted,
    /// a file under it would match).
    fn protected_by(&self, path: &str, as_dir: bool) -> Option<&str> {
        let under = format!("{path}/x");
        self.protected.iter().map(String::as_str).find(|glob| {
            let pattern = self.expand(glob);
            glob_match(&pattern, path) || (as_dir && glob_match(&pattern, &under))
        })
    }

    fn check_write(&self, path: &str, cwd: Option<&str>) -> Option<String> {
        let path = normalize(&self.expand(path), cwd.unwrap_or("/"));
        self.protected_by(&path, false).map(|glob| {
            format!("tool-guard: {path} is protected (matches {glob}): agents may not write it; ask the user")
        })
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

/// Marks the word after it as a redirection's target (a quoted `>` is text).
const REDIRECT: &str = "\0>";

/// Whether a word's path can be told without running a shell: no variable
/// but `$HOME`, no `~user`, no braces or backquotes.
fn known(word: &str) -> bool {
    let rest = ["$HOME", "${HOME}"]
        .iter()
        .find_map(|h| word.strip_prefix(h))
        .unwrap_or(word);
    let tilde_ok = !rest.starts_with('~') || rest == "~" || rest.starts_with("~/");
    tilde_ok && !rest.contains(['$', '{', '}', '`'])
}

/// The program a simple command runs and its arguments, past wrappers
/// (`VAR=value`, `sudo`/`doas` and their options, `env`, `nice`, `timeout`,
/// `nohup`, `command`, `exec`, `time`, `stdbuf`, `ionice`, `xargs`), and whether
/// it reads its arguments from stdin (`xargs`).
fn unwrap_command<'a>(words: &[&'a str]) -> (Option<&'a str>, Vec<&'a str>, bool) {
    let mut i = 0;
    let mut from_stdin = false;
    // Options of the wrappers that take a value.
    let with_value = |wrapper: &str, opt: &str| match wrapper {
        "sudo" | "doas" => matches!(opt, "-u" | "-g" | "-C" | "-D" | "-h" | "-p" | "-U" | "-r" | "-t" | "-c"),
        "env" => matches!(opt, "-u" | "-C" | "-S" | "--unset" | "--chdir"),
        "nice" => opt == "-n",
        "timeout" => matches!(opt, "-s" | "-k" | "--signal" | "--kill-after"),
        "stdbuf" | "ionice" => opt.len() == 2,
        "xargs" => matches!(opt, "-I" | "-n" | "-P" | "-L" | "-d" | "-a" | "-E" | "-s"),
        _ => false,
    };
    while i < words.len() {
        let w = words[i];
        let base = w.rsplit('/').next().unwrap_or(w);
        if w.contains('=') && !w.starts_with('-') && !w.starts_with('=') {
            i += 1;
            continue;
        }
        let wrapper = match base {
            "sudo" | "doas" | "env" | "nice" | "timeout" | "nohup" | "command" | "exec" | "time"
            | "stdbuf" | "ionice" | "xargs" => base,
            _ => break,
        };
        from_stdin |= wrapper == "xargs";
        i += 1;
        while i < words.len() && words[i].starts_with('-') && words[i].len() > 1 {
            if words[i] == "--" {
                i += 1;
                break;
            }
            let takes = with_value(wrapper, words[i]);
            i += if takes { 2 } else { 1 };
        }
        if wrapper == "timeout" && i < words.len() {
            i += 1; // the duration
        }
    }
    let program = words.get(i).copied();
    let args = words.get(i + 1..).map(<[&str]>::to_vec).unwrap_or_default();
    (program, args, from_stdin)
}

/// The simple commands of a shell line, split at `;`, `&`, `|`, newlines,
/// parentheses and backquotes, each into words with quotes and backslashes
/// honoured (a backslash-newline joins lines), unquoted `>` redirections marked
/// with [`REDIRECT`]; and the command substitutions found inside double quotes,
/// to check on their own. A guard, not a shell: it errs on the side of seeing
/// more commands.
fn simple_commands(line: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let mut commands = Vec::new();
    let mut substitutions = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    fn end_word(word: &mut String, words: &mut Vec<String>, in_word: &mut bool) {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    }
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
                        '`' => {
                            let inner: String = chars.by_ref().take_while(|&c| c != '`').collect();
                            substitutions.push(inner);
                        }
                        '$' if chars.peek() == Some(&'(') => {
                            chars.next();
                            let mut depth = 1;
                            let mut inner = String::new();
                            for c in chars.by_ref() {
                                match c {
                                    '(' => depth += 1,
                                    ')' => {
                                        depth -= 1;
                                        if depth == 0 {
                                            break;
                                        }
                                    }
                                    _ => {}
                                }
                                inner.push(c);
                            }
                            substitutions.push(inner);
                            word.push('$');
                        }
                        c => word.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
            },
            '>' => {
                // A file descriptor before it (`2>`) or `&>`: not a word.
                if in_word && word.chars().all(|c| c.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                end_word(&mut word, &mut words, &mut in_word);
                if matches!(chars.peek(), Some('>' | '|')) {
                    chars.next();
                }
                if chars.peek() == Some(&'&') {
                    chars.next(); // `>&2`: a descriptor, not a file
                    while chars.peek().is_some_and(|c| c.is_ascii_digit() || *c == '-') {
                        chars.next();
                    }
                } else {
                    words.push(REDIRECT.to_owned());
                }
            }
            '&' if chars.peek() == Some(&'>') => {
                end_word(&mut word, &mut words, &mut in_word);
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
    (commands, substitutions)
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
        assert!(deny("cd x && rm -r -f ../../other").is_some());
        assert!(deny("cd x && rm -r -f ../other").is_none(), "proj/other");
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
        // Found by an adversarial round.
        for bad in [
            "sudo -u root rm -rf /x",
            "sudo -E rm -rf /x",
            "env FOO=1 rm -rf /x",
            "nice -n 5 rm -rf /x",
            "timeout 5 rm -rf /x",
            "doas rm -rf /x",
            "find . | xargs rm -rf",
            "rm -rf \\\n/",
            "echo \"$(rm -rf /x)\"",
            "x=\"`rm -rf /x`\"",
            "rm -rf $PWD/../other",
            "rm -rf ~root",
            "rm -rf {/x,y}",
            "cd / && rm -rf usr",
            "cd .. && rm -rf proj",
            "cd $SOMEWHERE && rm -rf build",
            "echo x 2>~/.ssh/x",
            "echo x>~/.ssh/x",
            "echo x >| /etc/hosts",
            "echo x &> /etc/hosts",
            "rm -rf .git",
            "rm .env",
            "rm -f ~/.ssh/id_rsa",
            "rm --recur /x",
            "rm -r -- /x",
            "rm -rf /*",
        ] {
            assert!(deny(bad).is_some(), "allowed: {bad}");
        }
        for fine in [
            "rm -rf ./build",
            "rm -rf build/*",
            "grep -r foo .",
            "git rm -r --cached x",
            "echo \"rm -rf /\"",
            "echo '>' /etc/x",
            "echo x 2>&1 > out.log",
            "cd src && rm -rf gen",
        ] {
            assert!(deny(fine).is_none(), "denied: {fine}");
        }
    }

    #[test]
    fn the_tool_s_own_directory_counts() {
        let g = guard();
        let body = serde_json::json!({"command": "rm -rf usr", "cwd": "/home/u/proj", "workdir": "/"});
        assert!(g.check(&request(body)).is_some());
        let body = serde_json::json!({"command": "rm -rf gen", "cwd": "/home/u/proj", "workdir": "/home/u/proj/src"});
        assert!(g.check(&request(body)).is_none());
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
