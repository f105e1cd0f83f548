//! Adds and removes hook commands in Hermes's `config.yaml`
//! (`hooks: {<event>: [{command, timeout}]}`) by editing its lines: each line
//! added ends with [`TAG`], and uninstall removes exactly those lines, so the
//! rest of the file (comments, order, quoting) never changes.

use anyhow::{bail, Context};

/// Ends every line hookbus adds.
pub const TAG: &str = "  # hookbus agent-hook";

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// `key:` alone on its line (a block follows), at this indent.
fn is_key(line: &str, at: usize, key: &str) -> bool {
    if indent(line) != at {
        return false;
    }
    let rest = line.trim_start_matches(' ');
    let Some(after) = rest.strip_prefix(key).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let after = after.trim();
    after.is_empty() || after.starts_with('#')
}

/// Whether `key:` sits at this indent with a value on the same line.
fn is_inline_key(line: &str, at: usize, key: &str) -> bool {
    indent(line) == at
        && line
            .trim_start_matches(' ')
            .strip_prefix(key)
            .is_some_and(|r| r.starts_with(':'))
        && !is_key(line, at, key)
}

/// The end (exclusive) of the block under line `at` whose lines are indented
/// more than `indent`: after its last content line.
fn block_end(lines: &[String], at: usize, min_indent: usize) -> usize {
    // A list may sit at its key's own indent (`key:` then `- item`, as PyYAML
    // writes it): its items, and their lines, belong to the block too.
    let compact = lines[at + 1..]
        .iter()
        .find(|l| is_content(l))
        .is_some_and(|l| indent(l) == min_indent && l.trim_start().starts_with("- "));
    let mut end = at + 1;
    for (i, line) in lines.iter().enumerate().skip(at + 1) {
        if is_content(line) {
            let item = compact && indent(line) == min_indent && line.trim_start().starts_with("- ");
            if indent(line) <= min_indent && !item {
                break;
            }
            end = i + 1;
        }
    }
    end
}

fn entry(indent: &str, command: &str) -> [String; 2] {
    [
        format!("{indent}- command: \"{command}\"{TAG}\n"),
        format!("{indent}  timeout: 10{TAG}\n"),
    ]
}

/// Adds a hook running `command` to each of `events` that lacks one.
pub fn install(
    old: &str,
    events: &[String],
    command: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    check(old)?;
    let mut lines: Vec<String> = old.split_inclusive('\n').map(str::to_owned).collect();
    if let Some(last) = lines.last_mut() {
        if !last.ends_with('\n') {
            // The one byte an uninstall does not give back.
            last.push('\n');
        }
    }
    let mut added = Vec::new();
    for event in events {
        let hooks = lines.iter().position(|l| is_key(l, 0, "hooks"));
        let Some(hooks) = hooks else {
            if lines.iter().any(|l| is_inline_key(l, 0, "hooks")) {
                bail!("its `hooks:` has its value on the same line: write it as a block to let hookbus add to it");
            }
            lines.push(format!("hooks:{TAG}\n"));
            lines.push(format!("  {event}:{TAG}\n"));
            lines.extend(entry("    ", command));
            added.push(event.clone());
            continue;
        };
        let end = block_end(&lines, hooks, 0);
        let child = lines[hooks + 1..end]
            .iter()
            .find(|l| is_content(l))
            .map_or(2, |l| indent(l));
        let pad = " ".repeat(child);
        match (hooks + 1..end).find(|&i| is_key(&lines[i], child, event)) {
            Some(at) => {
                let event_end = block_end(&lines, at, child);
                if let Some(i) = (at..event_end).find(|&i| lines[i].contains(super::MARK)) {
                    // Ours already: its command brought up to date.
                    let line = &lines[i];
                    let pad = &line[..indent(line)];
                    let updated = format!("{pad}- command: \"{command}\"{TAG}\n");
                    if *line == updated {
                        continue;
                    }
                    lines[i] = updated;
                    added.push(event.clone());
                    continue;
                }
                let item = lines[at + 1..event_end]
                    .iter()
                    .find(|l| is_content(l))
                    .map_or(child + 2, |l| indent(l));
                let new = entry(&" ".repeat(item), command);
                lines.splice(event_end..event_end, new);
            }
            None => {
                if (hooks + 1..end).any(|i| is_inline_key(&lines[i], child, event)) {
                    bail!("its `hooks.{event}:` has its value on the same line: write it as a list to let hookbus add to it");
                }
                let mut new = vec![format!("{pad}{event}:{TAG}\n")];
                new.extend(entry(&format!("{pad}  "), command));
                lines.splice(end..end, new);
            }
        }
        added.push(event.clone());
    }
    let text: String = lines.concat();
    check(&text).context("the edit broke the file (a bug: nothing was written)")?;
    if added.is_empty() {
        return Ok((old.to_owned(), added));
    }
    Ok((text, added))
}

/// Removes every line hookbus added.
pub fn uninstall(old: &str) -> anyhow::Result<(String, usize)> {
    let mut kept = String::with_capacity(old.len());
    let mut removed = 0;
    for line in old.split_inclusive('\n') {
        if line.trim_end_matches('\n').ends_with(TAG) {
            if line.contains("- command:") {
                removed += 1;
            }
            continue;
        }
        kept.push_str(line);
    }
    check(&kept).context("without hookbus's lines the file would not parse: edit it by hand")?;
    Ok((kept, removed))
}

fn check(text: &str) -> anyhow::Result<()> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let _: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).context("it is not valid YAML: fix it first")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "/bin/hookbus agent-hook --agent hermes";

    #[test]
    fn install_then_uninstall_gives_the_file_back_byte_for_byte() {
        let events = vec!["pre_tool_call".to_owned(), "on_session_end".to_owned()];
        for original in [
            "model: hermes-4  # mine\n\nhooks:\n  pre_tool_call:\n    - command: \"~/guard.py\"\n      timeout: 5\n  # later\nother: 1\n",
            "model: x\n",
            "hooks:\n    post_tool_call:\n        - command: log.sh\n",
            "hooks:\n  pre_tool_call:\n  - command: guard.sh\n    timeout: 5\n  post_tool_call:\n  - command: log.sh\nx: 1\n",
            "",
        ] {
            let (installed, added) = install(original, &events, CMD).unwrap();
            assert_eq!(added, events, "{original}");
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&installed).unwrap();
            for event in &events {
                let list = v["hooks"][event.as_str()].as_sequence().unwrap();
                assert_eq!(list.last().unwrap()["command"].as_str(), Some(CMD), "{installed}");
            }
            let (again, added) = install(&installed, &events, CMD).unwrap();
            assert!(added.is_empty());
            assert_eq!(again, installed, "idempotent");
            let (back, removed) = uninstall(&installed).unwrap();
            assert_eq!(removed, 2);
            assert_eq!(back, original, "{installed}");
        }
        assert!(install("hooks: {}\n", &events, CMD).is_err());
        assert!(install("a: [\n", &events, CMD).is_err());
    }
}
