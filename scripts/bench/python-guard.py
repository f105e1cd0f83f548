#!/usr/bin/env python3
"""The baseline for `scripts/bench-agent-hook.sh`: a Claude Code PreToolUse hook
written the usual way, one Python process per tool call, doing the check the
tool-guard hook does (recursive deletes outside the project, protected paths).
Prints Claude Code's deny JSON, or nothing to allow."""
import json
import os
import re
import shlex
import sys

PROTECTED = [os.path.expanduser(p) for p in ("~/.ssh/", "~/.aws/", "~/.gnupg/")] + ["/etc/"]

event = json.load(sys.stdin)
command = event.get("tool_input", {}).get("command", "")
cwd = os.path.normpath(event.get("cwd") or "/")
reason = None
for part in re.split(r"[;&|\n()`]+", command):
    try:
        words = shlex.split(part)
    except ValueError:
        words = part.split()
    while words and (words[0] in ("sudo", "command", "exec", "nohup", "time") or "=" in words[0]):
        words = words[1:]
    if words and os.path.basename(words[0]) == "rm" and any(
            w == "--recursive" or (w.startswith("-") and not w.startswith("--") and ("r" in w or "R" in w))
            for w in words[1:]):
        for target in (w for w in words[1:] if not w.startswith("-")):
            path = os.path.normpath(os.path.join(cwd, os.path.expanduser(target)))
            if not path.startswith(cwd + "/"):
                reason = f"recursive delete of {target} is outside the project {cwd}"
    for i, w in enumerate(words):
        if w in (">", ">>") and i + 1 < len(words):
            path = os.path.normpath(os.path.join(cwd, os.path.expanduser(words[i + 1])))
            if any(path.startswith(p) for p in PROTECTED):
                reason = f"{path} is protected"
if reason:
    print(json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                              "permissionDecision": "deny",
                                              "permissionDecisionReason": reason}}))
