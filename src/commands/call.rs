//! `keel call TOOL [ARGS|-]` and `/call TOOL [ARGS]`: one tool call by a
//! person. Shared: reading the arguments ([`arguments`]: none is `{}`,
//! `-` reads standard input in the CLI), the call itself ([`run`]), the
//! error ([`tool_error_text`]: advice names each front end's commands) and
//! the result ([`Called`]: the CLI prints it as one line of JSON, the
//! console pretty, cut after [`SHOWN_LINES`] lines with `/last` to see it
//! whole, and how long it took).
//!
//! When a person is there to answer ([`Person`]: the console, or `keel
//! call` on a terminal), an `ask` decision is put to them, as in an agent
//! run; and the console's Ctrl-C stops the call and leaves them in the
//! console. The call runs on the runtime; the gate's question reaches the
//! calling thread through a channel (`PersonApprover`), which shows it
//! and reads the answer with the front end's own reader (the terminal, or
//! the next line of a piped console). Nothing is stored as an approval
//! request: there is no run to park; the audit log records how the ask
//! ended. With nobody there (a `keel call` in a pipe), `ask` is refused at
//! once and the error says how to grant.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use super::{Command, CommandError, Ctx, Render, Text};
use crate::host::RunLink;
use crate::kernel::Kernel;
use crate::kernel::gate::{ApprovalRequest, Approver, AskOutcome};
use crate::repl::chat::AskPerson;
use crate::store::{ApprovalAnswer, ApprovalRecord, ApprovalState};
use crate::tool::ToolError;

/// The call in flight, for a Ctrl-C handler: its cancel flag.
pub type CurrentCall = Arc<Mutex<Option<Arc<AtomicBool>>>>;

type Question = (ApprovalRequest, mpsc::Sender<AskOutcome>);

/// Hands the gate's questions to the calling thread and waits for the
/// person's answer (or the call's cancellation).
struct PersonApprover {
    questions: Mutex<mpsc::Sender<Question>>,
    cancelled: Arc<AtomicBool>,
}

impl Approver for PersonApprover {
    fn approve(&self, request: &ApprovalRequest) -> AskOutcome {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .questions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((request.clone(), tx));
        if sent.is_err() {
            return AskOutcome::Nobody;
        }
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(outcome) => return outcome,
                Err(mpsc::RecvTimeoutError::Disconnected) => return AskOutcome::Nobody,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.cancelled.load(Ordering::Relaxed) {
                        return AskOutcome::Cancelled;
                    }
                }
            }
        }
    }
}

/// Who answers an `ask` during the call.
pub struct Person<'a> {
    /// Set while the call runs, so Ctrl-C can stop it.
    pub current: &'a CurrentCall,
    /// Where the question is shown.
    pub notes: &'a mut dyn std::io::Write,
    /// Reads the answer (`None`: nobody can answer after all).
    pub ask: AskPerson<'a>,
}

/// The arguments as given: none is `{}`; `-` reads `stdin` (the CLI's
/// standard input) when there is one.
pub fn arguments(given: Option<&str>, stdin: Option<&mut dyn Read>) -> Result<Value, CommandError> {
    let read;
    let text = match (given.map(str::trim), stdin) {
        (None | Some(""), _) => return Ok(Value::Object(Default::default())),
        (Some("-"), Some(input)) => {
            let mut text = String::new();
            input
                .read_to_string(&mut text)
                .map_err(|e| CommandError::ArgumentsUnreadable(e.to_string()))?;
            read = text;
            read.as_str()
        }
        (Some(text), _) => text,
    };
    serde_json::from_str(text).map_err(|e| CommandError::BadArguments {
        given: format!("`{}`", crate::repl::chat::one_line(text, 80)),
        error: e.to_string(),
    })
}

/// A tool's result.
pub struct Called {
    pub result: Value,
    /// How long the call took, asks included.
    pub elapsed: Duration,
}

/// Lines of a result the console shows before it cuts (`/last` shows all).
pub const SHOWN_LINES: usize = 40;

/// Bytes of a result the console shows before it cuts (one long line).
pub const SHOWN_BYTES: usize = 8 * 1024;

impl Called {
    /// The result whole, pretty (the console's `/last`).
    pub fn whole(&self) -> String {
        serde_json::to_string_pretty(&self.result).unwrap_or_default()
    }
}

impl Render for Called {
    /// The result pretty, cut when long, and how long it took.
    fn text(&self) -> Text {
        Text::plain(format!(
            "{}\n({} ms)\n",
            shorten(&self.whole()),
            self.elapsed.as_millis()
        ))
    }

    /// One line, as `keel call` has always printed it.
    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&self.result)
    }
}

/// A long result's first [`SHOWN_LINES`] lines (at most [`SHOWN_BYTES`]),
/// and how to see the rest.
fn shorten(whole: &str) -> String {
    let total = whole.lines().count();
    if total <= SHOWN_LINES && whole.len() <= SHOWN_BYTES {
        return whole.to_string();
    }
    let mut head: String = whole
        .lines()
        .take(SHOWN_LINES)
        .collect::<Vec<_>>()
        .join("\n");
    if head.len() > SHOWN_BYTES {
        let mut end = SHOWN_BYTES;
        while !head.is_char_boundary(end) {
            end -= 1;
        }
        head.truncate(end);
    }
    format!(
        "{head}\n… cut: {} bytes, {total} lines in all; /last shows it whole",
        whole.len()
    )
}

/// Calls `tool` with `args`. With a [`Person`], an `ask` is put to them
/// and the call can be cancelled through [`Person::current`].
pub fn run(
    ctx: Ctx<'_>,
    rt: &tokio::runtime::Runtime,
    tool: &str,
    args: Value,
    person: Option<Person<'_>>,
) -> Result<Called, CommandError> {
    let started = std::time::Instant::now();
    let result = match person {
        None => rt.block_on(ctx.kernel.call_tool(tool, args)),
        Some(p) => call_with_person(ctx.kernel, rt, tool, args, p),
    };
    match result {
        Ok(result) => Ok(Called {
            result,
            elapsed: started.elapsed(),
        }),
        Err(e) => Err(CommandError::Tool(e)),
    }
}

/// A tool error with its advice naming each front end's commands. The
/// CLI's rendering is exactly the error's `Display` (a test holds them
/// together). Advice inside a script's error (a gate's denial raised
/// through the script) is the script's text, shown as it is.
pub fn tool_error_text(e: &ToolError) -> Text {
    match e {
        ToolError::BadName { name } => crate::text![
            format!("`{name}` is not a tool name; write SKILL.TOOL, e.g. `notes.add` (see `"),
            Command::Tools.bare(),
            "`)"
        ],
        ToolError::UnknownTool { name, suggestion } => crate::text![
            format!(
                "no tool `{name}`{}; see `",
                suggestion
                    .as_ref()
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default()
            ),
            Command::Tools.bare(),
            "`"
        ],
        ToolError::SkillNotLoaded { name, skill, error } => crate::text![
            format!(
                "no tool `{name}`: skill {skill} did not load: {error}; fix it and it reloads (`"
            ),
            Command::Check.bare(),
            "` shows every problem)"
        ],
        ToolError::SkillDisabled { name, skill } => crate::text![
            format!(
                "`{name}` is not available: skill `{skill}` is disabled in this workspace; enable it with `"
            ),
            Command::Enable.with(skill.clone()),
            "`"
        ],
        other => Text::plain(other.to_string()),
    }
}

fn call_with_person(
    kernel: &Kernel,
    rt: &tokio::runtime::Runtime,
    tool: &str,
    args: Value,
    person: Person<'_>,
) -> Result<Value, ToolError> {
    let Person {
        current,
        notes,
        ask,
    } = person;
    let shown_args = args.to_string();
    let cancelled = Arc::new(AtomicBool::new(false));
    let (questions, incoming) = mpsc::channel::<Question>();
    let link = Arc::new(RunLink {
        run_id: None,
        cancelled: cancelled.clone(),
        approver: Arc::new(PersonApprover {
            questions: Mutex::new(questions),
            cancelled: cancelled.clone(),
        }),
    });
    *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(cancelled.clone());
    let task = {
        let (kernel, tool) = (kernel.clone(), tool.to_string());
        rt.spawn(async move { kernel.call_tool_for(&tool, args, Some(link)).await })
    };
    // Answer questions until the call ends.
    while !task.is_finished() {
        match incoming.recv_timeout(Duration::from_millis(20)) {
            Ok((request, reply)) => {
                let outcome = put_to_person(kernel, &request, &shown_args, &cancelled, notes, ask);
                let _ = reply.send(outcome);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let result = rt.block_on(task);
    *current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    result.unwrap_or_else(|e| Err(ToolError::Internal(format!("tool call task failed: {e}"))))
}

/// Shows one question and reads the answer: yes, no, or always (which
/// stores a grant of the exact rule shown).
fn put_to_person(
    kernel: &Kernel,
    request: &ApprovalRequest,
    arguments: &str,
    cancelled: &AtomicBool,
    notes: &mut dyn std::io::Write,
    ask: AskPerson<'_>,
) -> AskOutcome {
    // The prompt's words are the agent's: the same record shape, not
    // stored.
    let rec = ApprovalRecord {
        id: "call".into(),
        run_id: String::new(),
        skill: request.skill.clone(),
        tool: request.tool.clone(),
        capability: request.capability.name().to_string(),
        target: request.target.clone(),
        rule: request.rule.clone().unwrap_or_default(),
        workspace: kernel.workspace().display().to_string(),
        arguments: arguments.to_string(),
        state: ApprovalState::Pending,
        answer: None,
        created_ms: 0,
        answered_ms: None,
    };
    let _ = writeln!(notes, "{}", crate::repl::chat::approval_prompt(&rec));
    loop {
        let _ = write!(notes, "{}", crate::repl::chat::answer_prompt(&rec));
        let _ = notes.flush();
        let still_wanted = || !cancelled.load(Ordering::Relaxed);
        let Some(line) = ask(&rec, &still_wanted) else {
            if cancelled.load(Ordering::Relaxed) {
                return AskOutcome::Cancelled;
            }
            let _ = writeln!(notes, "\nnobody can answer here, so no");
            return AskOutcome::Nobody;
        };
        match ApprovalAnswer::parse(&line) {
            Some(ApprovalAnswer::Yes) => return AskOutcome::Approved,
            Some(ApprovalAnswer::No) => return AskOutcome::Denied,
            Some(ApprovalAnswer::Always) if !rec.rule.is_empty() => {
                return match kernel
                    .store()
                    .grant(kernel.workspace(), &rec.skill, &rec.rule)
                {
                    Ok(_) => {
                        let _ = writeln!(
                            notes,
                            "granted {} {} for good",
                            crate::text::escape_control(&rec.skill),
                            crate::text::escape_control(&rec.rule)
                        );
                        AskOutcome::Approved
                    }
                    Err(e) => {
                        let _ = writeln!(notes, "could not store the grant ({e}), so no");
                        AskOutcome::Denied
                    }
                };
            }
            Some(ApprovalAnswer::Always) => {
                let _ = writeln!(
                    notes,
                    "`always` is not offered here: no rule names this target alone"
                );
            }
            None => {
                let _ = writeln!(notes, "please answer y, n or always");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Front;

    /// The CLI's words for a tool error are the error's own `Display`
    /// (what every other caller shows), for every variant that names a
    /// command; the console's differ only in naming `/tools`, `/check`.
    #[test]
    fn tool_errors_read_the_same_in_the_cli_and_name_console_commands_there() {
        let errors = [
            ToolError::BadName { name: "x".into() },
            ToolError::UnknownTool {
                name: "notes.ad".into(),
                suggestion: Some("notes.add".into()),
            },
            ToolError::UnknownTool {
                name: "zz.top".into(),
                suggestion: None,
            },
            ToolError::SkillNotLoaded {
                name: "b.go".into(),
                skill: "b@1.0.0".into(),
                error: "main.luau:2: nope\n  traceback".into(),
            },
            ToolError::Internal("boom".into()),
        ];
        for e in &errors {
            let t = tool_error_text(e);
            assert_eq!(t.render(Front::Cli, false), e.to_string(), "{e:?}");
            let console = t.render(Front::Console, false);
            assert!(!console.contains("`keel "), "{console}");
        }
        assert!(
            tool_error_text(&errors[1])
                .render(Front::Console, false)
                .ends_with("see `/tools`")
        );
        assert!(
            tool_error_text(&errors[3])
                .render(Front::Console, false)
                .contains("(`/check` shows every problem)")
        );
    }

    #[test]
    fn arguments_default_to_an_object_and_bad_json_says_what_and_how() {
        assert_eq!(arguments(None, None).unwrap(), serde_json::json!({}));
        assert_eq!(arguments(Some("  "), None).unwrap(), serde_json::json!({}));
        let mut input: &[u8] = br#"{"text": "from stdin"}"#;
        assert_eq!(
            arguments(Some("-"), Some(&mut input)).unwrap(),
            serde_json::json!({"text": "from stdin"})
        );
        // No standard input to read (the console): `-` is just bad JSON.
        let e = arguments(Some("-"), None).unwrap_err().to_string();
        assert!(e.starts_with("arguments are not valid JSON"), "{e}");
        let e = arguments(Some("{bad\u{1b}[2J"), None).unwrap_err();
        let shown = e.text().render(Front::Console, false);
        assert!(shown.contains("pass an object like"), "{shown}");
        assert!(!shown.contains('\u{1b}'), "{shown}");
    }
}
