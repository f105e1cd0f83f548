#!/usr/bin/env python3
"""desktop-notify: a hermes-style subprocess hook that shows a message as a desktop
notification, and writes a log line when there is no desktop to show it on.

The bus runs it once per message (mode: spawn) with the message JSON on stdin, the way
hermes-bus runs its hook scripts. It uses only the standard library.

Notifiers, first found wins: notify-send (Linux, freedesktop), terminal-notifier or
osascript (macOS). With none, or when the notifier fails (no display, no D-Bus session),
the notification is appended to the log file instead.

Environment (set with `env:` in hooks.yaml):
  NOTIFY_LOG      log file for the fallback
                  (default: $XDG_STATE_HOME/hookbus/notifications.log,
                  i.e. ~/.local/state/hookbus/notifications.log)
  NOTIFY_URGENCY  low | normal | critical (notify-send only; default normal)
  NOTIFY_MAX      longest body shown, in characters (default 200)
"""

import datetime
import json
import os
import shutil
import subprocess
import sys


def summary(message):
    """The notification's title and body for a bus message."""
    sender = message.get("from") or "someone"
    to = message.get("to") or "everyone"
    title = f"hookbus: {sender} → {to}"
    body = message.get("body")
    if isinstance(body, dict):
        # Common shapes: {"text": …}, {"message": …}, {"title": …, "text": …}
        title = str(body.get("title") or title)
        body = body.get("text") or body.get("message") or body
    if not isinstance(body, str):
        body = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    limit = int(os.environ.get("NOTIFY_MAX", "200"))
    if len(body) > limit:
        body = body[: limit - 1] + "…"
    return title, body


def notify_desktop(title, body):
    """Shows the notification; returns False when no notifier could."""
    commands = []
    if shutil.which("notify-send"):
        urgency = os.environ.get("NOTIFY_URGENCY", "normal")
        commands.append(["notify-send", "--app-name=hookbus", f"--urgency={urgency}", title, body])
    if shutil.which("terminal-notifier"):
        commands.append(["terminal-notifier", "-title", title, "-message", body])
    if shutil.which("osascript"):
        script = f"display notification {json.dumps(body)} with title {json.dumps(title)}"
        commands.append(["osascript", "-e", script])
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return True
    return False


def log_line(title, body):
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    path = os.environ.get("NOTIFY_LOG") or os.path.join(state, "hookbus", "notifications.log")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"{now} {title}: {body}\n")


def main():
    try:
        message = json.load(sys.stdin)
    except ValueError as e:
        print(f"desktop-notify: stdin is not a JSON message: {e}", file=sys.stderr)
        return 1
    if not isinstance(message, dict):
        print("desktop-notify: stdin is not a JSON object", file=sys.stderr)
        return 1
    title, body = summary(message)
    if not notify_desktop(title, body):
        log_line(title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
