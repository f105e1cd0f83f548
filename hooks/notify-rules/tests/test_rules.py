"""Unit tests of the config, matching and templates, on the build machine's Python:

    python3 tests/test_rules.py

(app.py needs the component's bindings, so `hookbus hooks test` covers it.)
"""

import os
import sys
import unittest

# Keep __pycache__ out of src/: build-guests.sh hashes the folder to decide rebuilds.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from rules import ConfigError, parse_config  # noqa: E402
from template import Template, TemplateError, parse_hermes  # noqa: E402

BUILD_FAILED = {
    "type": "message",
    "to": "ci",
    "from": "builder",
    "id": "m1",
    "ts": 1732170000.5,
    "body": {"event": "build", "status": "failed", "project": "web", "error": "exit 2",
             "code": 2, "tags": ["a", "b"], "ok": False, "extra": None},
}


def rules_of(config):
    return parse_config(config)[0]


def first_match(config, message):
    return next((r for r in rules_of(config) if r.matches(message)), None)


class ConfigErrors(unittest.TestCase):
    def error(self, config):
        with self.assertRaises(ConfigError) as caught:
            parse_config(config)
        return str(caught.exception)

    def test_messages_name_the_key(self):
        ok = {"match": {"type": "message"}, "format": "x"}

        def one(**changes):  # a config with one rule: `ok` with these keys changed
            return {"notify_to": "n", "rules": [dict(ok, **changes)]}

        cases = [
            ([], "config: expected a mapping"),
            ({"notify_to": "n"}, "config: give either `rules` or `callbacks`"),
            ({"notify_to": "n", "rules": []}, "rules: expected a non-empty list"),
            ({"notify_to": "n", "rules": [ok], "callbacks": []}, "config: give either"),
            ({"notify_to": "n", "rulez": []}, "config: unknown key `rulez`"),
            ({"notify_to": "", "rules": [ok]}, "notify_to: expected an endpoint name"),
            ({"notify_to": "n", "rules": [ok, {"match": {}}]}, "rules[1].format: missing"),
            ({"rules": [ok]}, "rules[0].to: missing, and there is no `notify_to` default"),
            (one(fromat="x"), "rules[0]: unknown key `fromat`"),
            (one(stop="yes"), "rules[0].stop: expected true or false"),
            (one(format=3), "rules[0].format: expected a string"),
            (one(format="{body.x"), "rules[0].format: unmatched '{'"),
            (one(format="a } b"), "rules[0].format: unmatched '}'"),
            (one(format="{}"), "rules[0].format: {}: bad field path"),
            (one(format="{ts:}"), "rules[0].format: {ts:}: empty time format"),
            (one(match={"body": {"a": 1}}), "rules[0].match.body: expected a string"),
            (one(match={"body..a": 1}), "rules[0].match.body..a: bad field path"),
            (one(match={"to": []}), "rules[0].match.to: an empty list"),
            (one(match=["type"]), "rules[0].match: expected a mapping"),
            ({"callbacks": [{"match_type": "ack"}]}, "notify_to: missing"),
            ({"notify_to": "n", "callbacks": [{"print": True}]},
             "callbacks[0].match_type: expected"),
            ({"notify_to": "n", "callbacks": [{"match_type": "a", "sound": 1}]},
             "callbacks[0]: unknown key `sound`"),
            ({"notify_to": "n", "callbacks": [{"match_type": "a", "print_format": "~/fmt.sh"}]},
             "callbacks[0].print_format: format scripts are not supported"),
        ]
        for config, expected in cases:
            with self.subTest(config=config):
                self.assertIn(expected, self.error(config))


class Matching(unittest.TestCase):
    def matches(self, match, message=BUILD_FAILED):
        config = {"notify_to": "n", "rules": [{"match": match, "format": "x"}]}
        return first_match(config, message) is not None

    def test_exact_glob_and_all_conditions(self):
        self.assertTrue(
            self.matches({"type": "message", "body.event": "build", "body.status": "failed"})
        )
        self.assertTrue(self.matches({"from": "build*", "body.project": "w?b"}))
        self.assertFalse(self.matches({"body.event": "build", "body.status": "ok"}))
        self.assertFalse(self.matches({"from": "build"}))  # whole-value match
        self.assertTrue(self.matches({}))  # no conditions: every message

    def test_glob_is_literal_apart_from_star_and_question_mark(self):
        message = dict(BUILD_FAILED, **{"from": "a.b[1]"})
        self.assertTrue(self.matches({"from": "a.b[1]"}, message))
        self.assertFalse(self.matches({"from": "a?b1"}, message))

    def test_lists_numbers_booleans(self):
        self.assertTrue(self.matches({"body.status": ["ok", "failed"]}))
        self.assertTrue(self.matches({"body.code": 2}))
        self.assertTrue(self.matches({"body.code": 2.0}))
        self.assertFalse(self.matches({"body.code": "2x"}))
        self.assertTrue(self.matches({"body.code": "2"}))  # non-strings match as JSON text
        self.assertTrue(self.matches({"body.ok": False}))
        self.assertFalse(self.matches({"body.ok": 0}))  # a number never equals a boolean
        self.assertTrue(self.matches({"body.tags.1": "b"}))

    def test_null_means_absent(self):
        self.assertTrue(self.matches({"body.missing": None}))
        self.assertTrue(self.matches({"body.extra": None}))  # null counts as absent
        self.assertFalse(self.matches({"body.status": None}))
        self.assertFalse(self.matches({"body.missing": "*"}))  # "*" means present
        self.assertTrue(self.matches({"body.status": "*"}))

    def test_stop_and_order(self):
        rules = rules_of({"notify_to": "n", "rules": [
            {"name": "a", "match": {"body.event": "build"}, "format": "x", "stop": True},
            {"name": "b", "format": "x"},
        ]})
        self.assertEqual([r.name for r in rules], ["a", "b"])
        self.assertTrue(rules[0].stop)
        self.assertFalse(rules[1].stop)
        self.assertEqual(rules[1].to, "n")


class Templates(unittest.TestCase):
    def render(self, text, message=BUILD_FAILED):
        return Template.parse(text).render(message)

    def test_placeholders(self):
        self.assertEqual(
            self.render("{from}: build of {body.project} failed ({body.error})"),
            "builder: build of web failed (exit 2)",
        )
        self.assertEqual(
            self.render("{body.code} {body.tags} {body.ok} {body.tags.0}"), '2 ["a","b"] false a'
        )
        self.assertEqual(
            self.render("[{body.nope}] [{body.nope?none}] [{body.extra?null}] [{body.project?x}]"),
            "[] [none] [null] [web]",
        )
        self.assertEqual(
            self.render("{{literal}} {ts:%Y-%m-%d %H:%M:%S}"), "{literal} 2024-11-21 06:20:00"
        )
        self.assertEqual(self.render("{body.project:%H}"), "web")  # not a number: as usual
        self.assertEqual(self.render("{ts:%H:%M?never}", {}), "never")

    def test_hermes_placeholders(self):
        message = {"from": "TL", "ts": 0, "body": {"type": "task_done", "text": "shipped"}}
        template = parse_hermes(
            "{color:bold_green}✔ {from}{reset} → {text} ({type}) {bold}[{ts:%H:%M}]{reset}"
        )
        self.assertEqual(template.render(message), "✔ TL → shipped (task_done) [00:00]")

    def test_errors(self):
        for text in ("{a", "a}", "{a{b}}", "{.a}", "{}"):
            with self.subTest(text=text), self.assertRaises(TemplateError):
                Template.parse(text)


class HermesCallbacks(unittest.TestCase):
    CONFIG = {
        "notify_to": "hermes",
        "session_aliases": {"claude-tl": "TL"},
        "default_sender": "notify-agent",
        "callbacks": [
            {"match_type": "ack", "print": False, "context": False},
            {"match_type": "progress", "context": True, "context_format": "{from} progress: {text}"},
            {"match_type": "task_done", "print": True, "print_format": "{from} done: {text}",
             "context": False, "command": "~/.hermes/scripts/play-notify-sound"},
            {"match_type": "task_*"},
        ],
    }

    def test_translation(self):
        rules, warnings = parse_config(self.CONFIG)
        self.assertEqual(len(warnings), 1)
        self.assertIn("callbacks[2].command: ignored", warnings[0])
        self.assertTrue(all(r.stop and r.to == "hermes" for r in rules))

        def hit(body_type):
            message = {"from": "TL", "body": {"type": body_type, "text": "t"}}
            rule = next((r for r in rules if r.matches(message)), None)
            return rule and (rule.name, rule.template and rule.template.render(message))

        self.assertEqual(hit("ack"), ("callbacks[0]", None))  # silent: matches, sends nothing
        self.assertEqual(hit("progress"), ("callbacks[1]", "TL progress: t"))
        self.assertEqual(hit("task_done"), ("callbacks[2]", "TL done: t"))
        self.assertEqual(hit("task_error"), ("callbacks[3]", "t"))  # default format {text}
        self.assertIsNone(hit("other"))


if __name__ == "__main__":
    unittest.main()
