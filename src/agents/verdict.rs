//! A decision on a hook event, and how each agent wants to read it: what to
//! print on stdout, on stderr, and the exit status. docs/AGENTS.md cites each
//! agent's rules.

use serde_json::{json, Value};

use super::event::Agent;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to say: the agent's own permission rules apply.
    NoOpinion,
    Allow(Option<String>),
    Deny(String),
    /// Ask the user.
    Ask(String),
}

impl Decision {
    /// A responder's answer: `{"decision":"allow"|"deny"|"ask","reason":…}`.
    pub fn from_response(body: &Value) -> Result<Decision, String> {
        let reason = body
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let said = |d: &str| format!("{d} by a responder on the bus");
        match body.get("decision").and_then(Value::as_str) {
            Some("allow") => Ok(Decision::Allow(reason)),
            Some("deny" | "block") => Ok(Decision::Deny(reason.unwrap_or_else(|| said("denied")))),
            Some("ask") => Ok(Decision::Ask(reason.unwrap_or_else(|| said("to be confirmed")))),
            Some("none") => Ok(Decision::NoOpinion),
            None if body.get("decision").is_none() => Ok(Decision::NoOpinion),
            _ => Err(format!(
                "a responder answered {body}: want {{\"decision\":\"allow\"|\"deny\"|\"ask\",\"reason\":…}}"
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Decision::NoOpinion => "none",
            Decision::Allow(_) => "allow",
            Decision::Deny(_) => "deny",
            Decision::Ask(_) => "ask",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::NoOpinion => None,
            Decision::Allow(r) => r.as_deref(),
            Decision::Deny(r) | Decision::Ask(r) => Some(r),
        }
    }
}

/// What the hook program prints and exits with.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub status: u8,
}

impl Output {
    fn json(value: Value) -> Self {
        Output {
            stdout: Some(value.to_string()),
            stderr: None,
            status: 0,
        }
    }

    fn nothing() -> Self {
        Output {
            stdout: None,
            stderr: None,
            status: 0,
        }
    }

    /// Exit 2 with the reason on stderr: a block every agent honours, for an
    /// event this program could not read.
    pub fn blocked(reason: &str) -> Self {
        Output {
            stdout: None,
            stderr: Some(reason.to_owned()),
            status: 2,
        }
    }
}

/// `decision` on event `event` (its `hook_event_name`) of `agent`, in that
/// agent's own format. `gate` says whether the event can be stopped at all.
pub fn render(agent: Agent, event: &str, gate: bool, decision: &Decision) -> Output {
    if !gate {
        // Nothing to decide; Gemini reads stdout as JSON.
        return match agent {
            Agent::Gemini => Output::json(json!({})),
            _ => Output::nothing(),
        };
    }
    match agent {
        Agent::Claude | Agent::Codex => {
            let decide = |d: &str, reason: Option<&str>| {
                let mut out = json!({"hookEventName": event, "permissionDecision": d});
                if let Some(r) = reason {
                    out["permissionDecisionReason"] = r.into();
                }
                Output::json(json!({ "hookSpecificOutput": out }))
            };
            match (agent, decision) {
                (_, Decision::NoOpinion) => Output::nothing(),
                (_, Decision::Deny(r)) => decide("deny", Some(r)),
                (Agent::Claude, Decision::Allow(r)) => decide("allow", r.as_deref()),
                (Agent::Claude, Decision::Ask(r)) => decide("ask", Some(r)),
                // Codex refuses a bare allow and cannot ask before a tool: its
                // own approval flow decides, or the ask becomes a denial.
                (_, Decision::Allow(_)) => Output::nothing(),
                (_, Decision::Ask(r)) => decide(
                    "deny",
                    Some(&format!(
                        "needs a person's approval (Codex hooks cannot ask): {r}"
                    )),
                ),
            }
        }
        Agent::Gemini => Output::json(match decision {
            Decision::NoOpinion => json!({}),
            Decision::Allow(None) => json!({"decision": "allow"}),
            Decision::Allow(Some(r)) => json!({"decision": "allow", "reason": r}),
            Decision::Deny(r) => json!({"decision": "deny", "reason": r}),
            Decision::Ask(r) => json!({"decision": "ask", "reason": r}),
        }),
        Agent::Hermes => match decision {
            Decision::NoOpinion | Decision::Allow(_) => Output::nothing(),
            Decision::Deny(r) => Output::json(json!({"decision": "block", "reason": r})),
            Decision::Ask(r) => Output::json(json!({"action": "approve", "message": r})),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_reads_a_denial_its_own_way() {
        let deny = Decision::Deny("no".into());
        let claude = render(Agent::Claude, "PreToolUse", true, &deny);
        let v: Value = serde_json::from_str(claude.stdout.as_deref().unwrap()).unwrap();
        assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "deny");
        assert_eq!(v["hookSpecificOutput"]["permissionDecisionReason"], "no");
        assert_eq!(claude.status, 0);
        let hermes = render(Agent::Hermes, "pre_tool_call", true, &deny);
        assert_eq!(
            hermes.stdout.unwrap(),
            r#"{"decision":"block","reason":"no"}"#
        );
        let gemini = render(Agent::Gemini, "BeforeTool", true, &deny);
        assert_eq!(
            gemini.stdout.unwrap(),
            r#"{"decision":"deny","reason":"no"}"#
        );
        // Codex: no bare allow, no ask.
        assert_eq!(
            render(Agent::Codex, "PreToolUse", true, &Decision::Allow(None)),
            Output::nothing()
        );
        let ask = render(
            Agent::Codex,
            "PreToolUse",
            true,
            &Decision::Ask("sure?".into()),
        );
        assert!(ask.stdout.unwrap().contains("\"deny\""));
        // Not a gate: nothing to decide.
        assert_eq!(
            render(Agent::Claude, "Stop", false, &deny),
            Output::nothing()
        );
    }

    #[test]
    fn a_responder_s_answer() {
        assert_eq!(
            Decision::from_response(&json!({"decision": "deny", "reason": "r"})),
            Ok(Decision::Deny("r".into()))
        );
        assert_eq!(Decision::from_response(&json!({})), Ok(Decision::NoOpinion));
        assert!(Decision::from_response(&json!({"decision": "maybe"})).is_err());
    }
}
