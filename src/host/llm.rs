//! `keel.llm`: ask the configured model a question.
//!
//! Goes through the same fallback chain as the agent, and records the
//! tokens used against the skill (and the run, when a run called the tool).
//! The call waits for the whole answer; it counts against the tool's
//! deadline (`limits.timeout_ms`, raise it for skills that ask long
//! questions) and stops when the run it belongs to is cancelled.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Args, CallCtx, HostError, HostFn, opt, p};
use crate::capability::{CapabilityKind, Target};
use crate::llm::{Message, Request};

pub const FUNCTIONS: &[HostFn] = &[HostFn {
    namespace: "llm",
    name: "complete",
    params: &[
        p("prompt", "string | { {role: string, content: string} }"),
        opt(
            "options",
            "{system: string?, max_tokens: number?, temperature: number?}",
        ),
    ],
    returns: "{text: string, model: string, usage: {input_tokens: number, output_tokens: number}}",
    capability: Some(CapabilityKind::Llm),
    doc: "Asks the configured model (with its fallback chain) and returns the answer. `prompt` is a question, or a list of `{role = \"user\"|\"assistant\", content = ...}` messages; options set a system prompt, `max_tokens` (default 1024) and `temperature`. Tokens used are recorded for the skill.",
    luau_example: r#"local r = keel.llm.complete("Summarise: " .. text, { max_tokens = 200 })
return r.text"#,
    rhai_example: r#"let r = keel::llm::complete("Summarise: " + text, #{ max_tokens: 200 });
r.text"#,
    call: complete,
}];

fn messages(prompt: &Value) -> Result<Vec<Message>, HostError> {
    let bad = || {
        HostError::BadArgument(
            "argument 1 must be a string or a list of {role, content} messages".into(),
        )
    };
    match prompt {
        Value::String(s) if !s.trim().is_empty() => Ok(vec![Message::User(s.clone())]),
        Value::String(_) => Err(HostError::BadArgument(
            "argument 1 is empty; ask the model something".into(),
        )),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let content = m["content"].as_str().ok_or_else(bad)?.to_string();
                match m["role"].as_str() {
                    Some("user") => Ok(Message::User(content)),
                    Some("assistant") => Ok(Message::Assistant {
                        text: content,
                        tool_calls: Vec::new(),
                    }),
                    other => Err(HostError::BadArgument(format!(
                        "message {}: role must be \"user\" or \"assistant\", got {other:?}",
                        i + 1
                    ))),
                }
            })
            .collect(),
        _ => Err(bad()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteArgs {
    /// A question, or a list of messages: checked by [`messages`].
    prompt: Value,
    options: Option<CompleteOptions>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct CompleteOptions {
    system: Option<String>,
    max_tokens: Option<f64>,
    temperature: Option<f64>,
}

fn complete(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let CompleteArgs { prompt, options } = args.parse()?;
    let options = options.unwrap_or_default();
    let mut msgs = messages(&prompt)?;
    let limit = ctx.kernel.max_output_tokens();
    let max_tokens = match options.max_tokens {
        None => 1024.min(limit),
        Some(n) if n >= 1.0 && n.fract() == 0.0 => {
            u32::try_from(n as u64).unwrap_or(u32::MAX).min(limit)
        }
        Some(_) => {
            return Err(HostError::BadArgument(
                "options.max_tokens must be a whole number of at least 1".into(),
            ));
        }
    };
    let temperature = match options.temperature {
        None => None,
        Some(t) if (0.0..=2.0).contains(&t) => Some(t as f32),
        Some(_) => {
            return Err(HostError::BadArgument(
                "options.temperature must be a number from 0 to 2".into(),
            ));
        }
    };
    if let Some(system) = options.system {
        msgs.insert(0, Message::System(system));
    }
    ctx.check(CapabilityKind::Llm, Target::None)?;
    let Some(chain) = ctx.kernel.models() else {
        return Err(HostError::Failed(format!(
            "llm.complete: {}",
            crate::llm::NO_MODEL_HELP
        )));
    };
    let req = Request {
        model: String::new(),
        messages: msgs,
        tools: Vec::new(),
        max_tokens,
        temperature,
    };
    let left = ctx.remaining()?;
    let cancelled = || ctx.cancelled();
    let result = ctx.kernel.runtime().block_on(async {
        let mut ignore = |_| {};
        let ask = chain.complete(&req, &mut ignore);
        let watch_cancel = async {
            while !cancelled() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            r = ask => Some(r),
            _ = watch_cancel => None,
            _ = tokio::time::sleep(left) => None,
        }
    });
    let (completion, model) = match result {
        None => return Err(HostError::Deadline),
        Some(Err(e)) => return Err(HostError::Failed(format!("llm.complete: {e}"))),
        Some(Ok(c)) => c,
    };
    let run = ctx.run.as_ref().and_then(|r| r.run_id.as_deref());
    // A server that reports no counts is recorded as unknown; the script
    // sees null.
    let counts = completion.usage;
    if let Err(e) = ctx.kernel.record_usage(
        run,
        &ctx.skill.name,
        &model,
        counts.map(|u| (u.input_tokens, u.output_tokens)),
    ) {
        tracing::warn!(skill = %ctx.skill.name, error = %e, "could not record token usage");
    }
    Ok(json!({
        "text": completion.text,
        "model": model,
        "usage": counts.map(|u| json!({
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
        })),
    }))
}
