//! The console: `/` commands over the kernel, with reload results shown as
//! they happen.
//!
//! On a terminal it uses reedline (history in the data dir, completion of
//! commands and tool names); on a pipe it reads plain lines, so scripts and
//! CI can drive it. Commands are parsed into [`ConsoleCommand`] once and run
//! by [`Console::execute`]; a line without `/` is a message to the agent
//! ([`chat`]), in the current session (made on the first message).

mod call;
pub mod chat;
mod format;

use std::io::{BufRead, IsTerminal, Write};

use serde_json::Value;

pub use format::decision_for_rule;

use crate::agent::Agent;
use crate::commands::{self, Render};
use crate::kernel::{Kernel, KernelEvent};

/// A parsed console command.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsoleCommand {
    /// The last `/call` result, whole.
    Last,
    /// The shared listings take `--json` as on the command line.
    Skills {
        json: bool,
    },
    Tools {
        json: bool,
    },
    Call {
        tool: String,
        args: Value,
    },
    Reload {
        skill: Option<String>,
    },
    /// Checks every skill, or those under a path in the skill folders.
    Check {
        path: Option<std::path::PathBuf>,
    },
    Grants {
        json: bool,
    },
    Grant {
        skill: String,
        capability: String,
    },
    Revoke {
        skill: String,
        capability: String,
    },
    /// `/disable NAME`, `/enable NAME`.
    SkillState {
        skill: String,
        enabled: bool,
    },
    Audit {
        limit: usize,
        json: bool,
    },
    Sessions {
        json: bool,
    },
    SessionNew,
    SessionSwitch(String),
    History,
    Cancel,
    /// Approval requests (`--all`: answered ones too).
    Approvals {
        all: bool,
        json: bool,
    },
    /// Answers an approval request, as `keel approve` does.
    Approve {
        id: String,
        answer: String,
    },
    /// A session's runs (default: the current session's).
    Runs {
        session: Option<String>,
        json: bool,
    },
    Help,
    Quit,
    /// A line for the agent.
    Message(String),
}

/// Every command, for help and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    ("/skills", "[--json]  list skills and load failures"),
    ("/tools", "[--json]  list tools"),
    ("/call", "TOOL {json}  call a tool"),
    ("/last", "the last /call result, whole"),
    (
        "/reload",
        "[SKILL]  rescan skills (and restart SKILL's engines)",
    ),
    (
        "/check",
        "[PATH]  compile skills, show capabilities vs the policy",
    ),
    ("/grants", "[--json]  list grants"),
    ("/grant", "SKILL CAPABILITY  grant a capability"),
    ("/revoke", "SKILL CAPABILITY  remove a grant"),
    ("/disable", "SKILL  offer none of its tools (kept)"),
    ("/enable", "SKILL  offer its tools again"),
    (
        "/audit",
        "[N] [--json]  the newest N audit entries (0: all)",
    ),
    ("/sessions", "[--json]  list sessions"),
    ("/session", "new | switch ID  start or switch session"),
    ("/history", "the current session's messages"),
    (
        "/runs",
        "[ID] [--json]  a session's runs (default: this one's)",
    ),
    ("/cancel", "cancel the current session's run"),
    ("/approvals", "[--all] [--json]  approval requests waiting"),
    ("/approve", "ID yes|no|always  answer one (from any keel)"),
    ("/help", "this help"),
    ("/quit", "leave (also Ctrl-D)"),
];

/// Parses one console line.
pub fn parse(line: &str) -> Result<Option<ConsoleCommand>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Some(ConsoleCommand::Message(line.to_string())));
    };
    let (cmd, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    let two = |what: &str| -> Result<(String, String), String> {
        let mut it = args.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
            _ => Err(format!(
                "usage: /{what} SKILL CAPABILITY (e.g. /{what} notes fs.read:./notes)"
            )),
        }
    };
    // The shared listings: `--json` anywhere, at most `most` words besides.
    let listing = |most: usize| -> Result<(Vec<&str>, bool), String> {
        let mut words = Vec::new();
        let mut json = false;
        for w in args.split_whitespace() {
            match w {
                "--json" => json = true,
                flag if flag.starts_with("--") => {
                    return Err(format!(
                        "/{cmd} has no option `{flag}`; it takes --json (see /help)"
                    ));
                }
                w => words.push(w),
            }
        }
        if words.len() > most {
            return Err(format!(
                "/{cmd} takes {}, got `{args}` (see /help)",
                if most == 0 {
                    "only --json"
                } else {
                    "one argument and --json"
                }
            ));
        }
        Ok((words, json))
    };
    let cmd = match cmd {
        "skills" => ConsoleCommand::Skills {
            json: listing(0)?.1,
        },
        "tools" => ConsoleCommand::Tools {
            json: listing(0)?.1,
        },
        "call" => {
            let (tool, json) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            if tool.is_empty() {
                return Err(
                    "usage: /call TOOL {json} (e.g. /call notes.add {\"text\": \"hi\"})".into(),
                );
            }
            let json = json.trim();
            let args = if json.is_empty() {
                Value::Object(Default::default())
            } else {
                serde_json::from_str(json)
                    .map_err(|e| format!("arguments are not valid JSON: {e}"))?
            };
            ConsoleCommand::Call {
                tool: tool.to_string(),
                args,
            }
        }
        "reload" => ConsoleCommand::Reload {
            skill: (!args.is_empty()).then(|| args.to_string()),
        },
        "check" => {
            let mut it = args.split_whitespace();
            match (it.next(), it.next()) {
                (path, None) => ConsoleCommand::Check {
                    path: path.map(std::path::PathBuf::from),
                },
                _ => return Err("usage: /check [PATH] (a skill, or a folder of skills)".into()),
            }
        }
        "grants" => ConsoleCommand::Grants {
            json: listing(0)?.1,
        },
        "grant" => {
            let (skill, capability) = two("grant")?;
            ConsoleCommand::Grant { skill, capability }
        }
        "revoke" => {
            let (skill, capability) = two("revoke")?;
            ConsoleCommand::Revoke { skill, capability }
        }
        "disable" | "enable" => {
            let mut it = args.split_whitespace();
            match (it.next(), it.next()) {
                (Some(skill), None) => ConsoleCommand::SkillState {
                    skill: skill.to_string(),
                    enabled: cmd == "enable",
                },
                _ => return Err(format!("usage: /{cmd} SKILL (see /skills)")),
            }
        }
        "audit" => {
            let usage = || format!("usage: /audit [N] [--json], got `{args}`");
            let (words, json) = listing(1).map_err(|_| usage())?;
            ConsoleCommand::Audit {
                limit: match words.first() {
                    None => commands::audit::DEFAULT_LIMIT,
                    Some(n) => n.parse().map_err(|_| usage())?,
                },
                json,
            }
        }
        "sessions" => ConsoleCommand::Sessions {
            json: listing(0)?.1,
        },
        "session" => {
            let mut it = args.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some("new"), None, None) => ConsoleCommand::SessionNew,
                (Some("switch"), Some(id), None) => ConsoleCommand::SessionSwitch(id.to_string()),
                _ => return Err("usage: /session new | /session switch ID (see /sessions)".into()),
            }
        }
        "history" => ConsoleCommand::History,
        "approvals" => {
            let all = args.split_whitespace().any(|w| w == "--all");
            let rest: Vec<&str> = args.split_whitespace().filter(|w| *w != "--all").collect();
            let json = rest.contains(&"--json");
            if rest.iter().any(|w| *w != "--json") {
                return Err(format!("usage: /approvals [--all] [--json], got `{args}`"));
            }
            ConsoleCommand::Approvals { all, json }
        }
        "approve" => {
            let mut it = args.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some(id), Some(answer), None) => ConsoleCommand::Approve {
                    id: id.to_string(),
                    answer: answer.to_string(),
                },
                _ => {
                    return Err("usage: /approve ID yes|no|always (see /approvals)".into());
                }
            }
        }
        "runs" => {
            let (words, json) = listing(1)?;
            ConsoleCommand::Runs {
                session: words.first().map(|s| s.to_string()),
                json,
            }
        }
        "cancel" => ConsoleCommand::Cancel,
        "help" | "?" => ConsoleCommand::Help,
        "last" => ConsoleCommand::Last,
        "quit" | "exit" | "q" => ConsoleCommand::Quit,
        other => {
            let names = COMMANDS.iter().map(|(c, _)| &c[1..]);
            let hint = crate::capability::did_you_mean(other, names)
                .map(|s| format!(" (did you mean /{s}?)"))
                .unwrap_or_default();
            return Err(format!("unknown command /{other}{hint}; type /help"));
        }
    };
    Ok(Some(cmd))
}

/// Advice written for the command line, in the console's words: where the
/// console has the command (`/grant`, `/tools`, …), that is what it names.
pub fn in_console_words(text: &str) -> String {
    const SAME: &[(&str, &str)] = &[
        ("keel grant ", "/grant "),
        ("keel revoke ", "/revoke "),
        ("keel grants", "/grants"),
        ("keel tools", "/tools"),
        ("keel skills", "/skills"),
        ("keel audit", "/audit"),
        ("keel sessions", "/sessions"),
        ("keel approvals", "/approvals"),
        ("keel approve ", "/approve "),
        ("keel skill enable ", "/enable "),
        ("keel skill disable ", "/disable "),
    ];
    let mut out = text.to_string();
    for (cli, console) in SAME {
        out = out.replace(&format!("`{cli}"), &format!("`{console}"));
        out = out.replace(&format!(": {cli}"), &format!(": {console}"));
    }
    out
}

/// A shared command's output as the console shows it: notes first, then
/// the text (or the JSON); an error as a failed command. The caller puts
/// advice in the console's words.
/// With `json`, the JSON goes to `json_out` as is (no advice rewritten
/// inside it) and the text returned is empty.
fn shown<R: Render>(
    result: Result<R, commands::CommandError>,
    json: bool,
    json_out: &mut Option<String>,
) -> String {
    match result {
        Ok(out) if json => match out.json() {
            Ok(j) => {
                *json_out = Some(format!("{}\n", commands::json_for_terminal(&j)));
                String::new()
            }
            Err(e) => format!("error: cannot write JSON: {e}\n"),
        },
        Ok(out) => {
            let mut s: String = out.notes().iter().map(|n| format!("note: {n}\n")).collect();
            s.push_str(&out.text());
            s
        }
        Err(e) => format!("error: {e}\n"),
    }
}

/// What a command produced.
pub enum Outcome {
    Text(String),
    /// The command failed; the text says why (standard error in a pipe).
    Failed(String),
    Quit,
}

impl Outcome {
    /// A command's text, as failed when it is an error (every command's
    /// error reads `error: …`; a failed agent run `[run failed] …`).
    fn of(text: String) -> Self {
        if text.starts_with("error: ") || text.starts_with("[run failed]") {
            Self::Failed(text)
        } else {
            Self::Text(text)
        }
    }
}

/// The console's state: the kernel, the agent (when a model is
/// configured) and the current session.
pub struct Console<'a> {
    pub kernel: &'a Kernel,
    pub rt: &'a tokio::runtime::Runtime,
    pub agent: Option<Agent>,
    /// Made on the first message, or chosen with `/session`.
    pub session: Option<String>,
    pub current: chat::CurrentRun,
    /// The `/call` in flight (Ctrl-C stops it).
    pub call: call::CurrentCall,
    /// The last `/call` result, whole (`/last`).
    pub last: Option<String>,
}

/// Lines of a `/call` result shown before it is cut (`/last` shows all).
const SHOWN_LINES: usize = 40;

/// Bytes of a `/call` result shown before it is cut (one long line).
const SHOWN_BYTES: usize = 8 * 1024;

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

impl<'a> Console<'a> {
    /// A console; the agent is there if a model is configured.
    pub fn new(kernel: &'a Kernel, rt: &'a tokio::runtime::Runtime) -> Self {
        let agent = match Agent::new(kernel.clone()) {
            Ok(a) => Some(a),
            Err(crate::agent::AgentError::NoModel) => None,
            Err(e) => {
                eprintln!("keel: the agent is not available: {e}");
                None
            }
        };
        Self {
            kernel,
            rt,
            agent,
            session: None,
            current: Default::default(),
            call: Default::default(),
            last: None,
        }
    }

    /// Runs one command; `ask` reads a person's answer to an approval.
    pub fn execute(&mut self, cmd: ConsoleCommand, ask: chat::AskPerson<'_>) -> Outcome {
        let kernel = self.kernel;
        let ctx = commands::Ctx::new(kernel);
        // A shared listing's `--json`, shown exactly as the CLI prints it.
        let mut json_out = None;
        // A `/call` result: the tool's words, not rewritten.
        let mut verbatim = false;
        let text = match cmd {
            ConsoleCommand::Quit => return Outcome::Quit,
            // As `keel skills` shows them: scripts that do not compile or
            // load too, with file and line.
            ConsoleCommand::Last => match &self.last {
                Some(whole) => format!("{whole}\n"),
                None => "no /call result yet\n".into(),
            },
            ConsoleCommand::Skills { json } => {
                shown(Ok(commands::skills::run(ctx)), json, &mut json_out)
            }
            ConsoleCommand::Tools { json } => {
                shown(Ok(commands::tools::run(ctx)), json, &mut json_out)
            }
            ConsoleCommand::Call { tool, args } => {
                let started = std::time::Instant::now();
                let mut out = std::io::stdout();
                match call::call(kernel, self.rt, &tool, args, &self.call, &mut out, ask) {
                    Ok(v) => {
                        let whole = serde_json::to_string_pretty(&v).unwrap_or_default();
                        let shown = shorten(&whole);
                        self.last = Some(whole);
                        verbatim = true;
                        format!("{shown}\n({} ms)\n", started.elapsed().as_millis())
                    }
                    Err(e) => format!("error: {e}\n"),
                }
            }
            ConsoleCommand::Reload { skill } => {
                let report = kernel.reload();
                if let Some(name) = &skill {
                    match kernel.skills().latest(name) {
                        Some(s) => {
                            s.pool.clear_idle();
                            format!("{} restarts on its next call\n", s.id)
                        }
                        None => format!("no skill named `{name}` is loaded\n"),
                    }
                } else if report.is_empty() {
                    "no changes\n".into()
                } else {
                    String::new()
                }
            }
            ConsoleCommand::Check { path } => shown(
                commands::check::run(ctx, path.as_deref()),
                false,
                &mut json_out,
            ),
            ConsoleCommand::Grants { json } => {
                shown(commands::grants::run(ctx), json, &mut json_out)
            }
            ConsoleCommand::Grant { skill, capability } => shown(
                commands::grant::run(ctx, &skill, &capability),
                false,
                &mut json_out,
            ),
            ConsoleCommand::Revoke { skill, capability } => shown(
                commands::revoke::run(ctx, &skill, &capability),
                false,
                &mut json_out,
            ),
            ConsoleCommand::SkillState { skill, enabled } => shown(
                commands::skill_state::run(ctx, &skill, enabled),
                false,
                &mut json_out,
            ),
            ConsoleCommand::Audit { limit, json } => {
                shown(commands::audit::run(ctx, limit), json, &mut json_out)
            }
            ConsoleCommand::Sessions { json } => shown(
                commands::sessions::run(ctx, self.session.as_deref()),
                json,
                &mut json_out,
            ),
            ConsoleCommand::SessionNew => match kernel.store().create_session("console") {
                Ok(s) => {
                    let text = format!("new session {}\n", s.id);
                    self.session = Some(s.id);
                    text
                }
                Err(e) => format!("error: {e}\n"),
            },
            ConsoleCommand::SessionSwitch(id) => match kernel.store().session(&id) {
                Ok(Some(s)) => {
                    self.session = Some(s.id.clone());
                    format!("switched to session {} ({})\n", s.id, s.title)
                }
                Ok(None) => format!("no session `{id}` (see /sessions)\n"),
                Err(e) => format!("error: {e}\n"),
            },
            ConsoleCommand::History => match &self.session {
                None => "no session yet: send a message, or /session switch ID\n".into(),
                Some(id) => match kernel.store().messages(id) {
                    Ok(m) => chat::format_history(&m),
                    Err(e) => format!("error: {e}\n"),
                },
            },
            ConsoleCommand::Runs { session, json } => match session.or(self.session.clone()) {
                None => "no session yet: send a message, or /session switch ID\n".into(),
                Some(id) => shown(commands::runs::run(ctx, &id), json, &mut json_out),
            },
            ConsoleCommand::Approvals { all, json } => {
                shown(commands::approvals::run(ctx, all), json, &mut json_out)
            }
            ConsoleCommand::Approve { id, answer } => shown(
                commands::approve::run(ctx, &id, &answer),
                false,
                &mut json_out,
            ),
            ConsoleCommand::Cancel => {
                let mine: Vec<String> = self
                    .agent
                    .iter()
                    .flat_map(|a| a.active_runs())
                    .filter(|(_, s)| Some(s) == self.session.as_ref())
                    .map(|(r, _)| r)
                    .collect();
                if mine.is_empty() {
                    "no run in flight in this session\n".into()
                } else {
                    for r in &mine {
                        if let Some(a) = &self.agent {
                            a.cancel(r);
                        }
                    }
                    format!("cancelled {}\n", mine.join(", "))
                }
            }
            ConsoleCommand::Help => {
                let mut s =
                    String::from("commands (a line without / is a message to the agent):\n");
                for (c, d) in COMMANDS {
                    s.push_str(&format!("  {c:<10} {d}\n"));
                }
                s
            }
            ConsoleCommand::Message(text) => return self.message(&text, ask),
        };
        if let Some(json) = json_out {
            return Outcome::Text(json);
        }
        // Advice names the console's commands; a tool's own result is
        // shown as it is.
        if verbatim {
            Outcome::of(text)
        } else {
            Outcome::of(in_console_words(&text))
        }
    }

    fn message(&mut self, text: &str, ask: chat::AskPerson<'_>) -> Outcome {
        let Some(agent) = self.agent.clone() else {
            return Outcome::Text(format!(
                "{}(meanwhile, /call TOOL {{json}} runs tools; type /help)\n",
                chat::no_model_text()
            ));
        };
        let session = match &self.session {
            Some(s) => s.clone(),
            None => match agent.new_session(&chat::one_line(text, 60)) {
                Ok(s) => {
                    self.session = Some(s.id.clone());
                    s.id
                }
                Err(e) => return Outcome::of(format!("error: {e}\n")),
            },
        };
        let mut out = std::io::stdout();
        let mut notes = std::io::stdout();
        let result = chat::converse(
            &agent,
            self.rt,
            &session,
            text,
            &self.current,
            chat::Sinks {
                answer: &mut out,
                notes: &mut notes,
                waiting_hint: std::io::stdout().is_terminal(),
            },
            Some(ask),
        );
        Outcome::of(match result {
            Ok(o) => match o.state.name() {
                "done" => String::new(),
                "cancelled" => "[cancelled]\n".into(),
                _ => format!("[run failed] {}\n", o.reason.unwrap_or_default()),
            },
            Err(e) => format!("error: {e}\n"),
        })
    }
}

/// Renders a kernel event for the console. Reload reports quote skill
/// files and script errors, so each line is escaped.
pub fn render_event(e: &KernelEvent) -> String {
    crate::text::escape_control_keep_lines(&render_event_raw(e)).into_owned()
}

fn render_event_raw(e: &KernelEvent) -> String {
    match e {
        KernelEvent::Reloaded(report) => report
            .outcomes
            .iter()
            .map(|o| format!("[reload] {o}"))
            .collect::<Vec<_>>()
            .join("\n"),
        KernelEvent::ConfigReloaded(Ok(msg)) => format!("[config] {msg}"),
        KernelEvent::ConfigReloaded(Err(e)) => format!("[config] keeping the previous policy: {e}"),
        // Only this process's own `/disable` or `/enable` makes one here,
        // and that command already said what it did.
        KernelEvent::SkillState(_) => String::new(),
    }
}

/// Hands kernel events to the console, rendered, until `show` refuses (the
/// console is gone) or the kernel closes the channel. A burst that overruns
/// the channel (a checkout touching hundreds of skills) is reported as
/// missed events and the loop goes on: before, `Lagged` ended it and the
/// console silently stopped showing reloads for good.
pub async fn forward_events(
    mut events: tokio::sync::broadcast::Receiver<KernelEvent>,
    mut show: impl FnMut(String) -> bool,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let line = match events.recv().await {
            Ok(e) => render_event(&e),
            Err(RecvError::Lagged(n)) => format!(
                "[reload] {n} event{} missed in a burst of changes; /skills shows the current state",
                if n == 1 { "" } else { "s" }
            ),
            Err(RecvError::Closed) => break,
        };
        // A reload that only deferred a half-written file says nothing.
        if line.is_empty() {
            continue;
        }
        if !show(line) {
            break;
        }
    }
}

/// Completes commands and tool names from the current skill set.
struct ConsoleCompleter {
    kernel: Kernel,
}

impl reedline::Completer for ConsoleCompleter {
    fn complete(&mut self, line: &str, pos: usize) -> reedline::CompletionResult {
        let before = &line[..pos.min(line.len())];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let span = reedline::Span::new(start, pos);
        let suggest = |value: &str, description: Option<String>| reedline::Suggestion {
            value: value.to_string(),
            description,
            span,
            append_whitespace: true,
            ..Default::default()
        };
        let mut out = Vec::new();
        if start == 0 {
            for (c, d) in COMMANDS {
                if c.starts_with(word) {
                    out.push(suggest(c, Some(d.to_string())));
                }
            }
        } else if before.starts_with("/call ") && !before[6..start].contains(char::is_whitespace)
            || before.starts_with("/reload ")
        {
            let set = self.kernel.skills();
            if before.starts_with("/reload ") {
                for s in set.skills.values() {
                    if s.manifest.name.starts_with(word)
                        && !out
                            .iter()
                            .any(|x: &reedline::Suggestion| x.value == s.manifest.name)
                    {
                        out.push(suggest(&s.manifest.name, None));
                    }
                }
            } else {
                for (name, e) in &set.tools {
                    if name.starts_with(word) {
                        out.push(suggest(name, Some(e.spec().description.clone())));
                    }
                }
            }
        }
        reedline::CompletionResult::fresh(out)
    }
}

/// Runs the console until `/quit` or end of input. Returns whether every
/// command succeeded (fed from a pipe, a failed one makes keel exit 1).
pub fn run(kernel: &Kernel, rt: &tokio::runtime::Runtime) -> anyhow::Result<bool> {
    let watcher = if kernel.config().watch {
        match crate::skill::watch::watch(kernel) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("keel: not watching skill folders for changes: {e}");
                None
            }
        }
    } else {
        None
    };
    let set = kernel.skills();
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let banner = format!(
        "keel {} — {} skill{}, {} tool{}{}. Type /help.\n{}",
        env!("CARGO_PKG_VERSION"),
        set.skills.len(),
        if set.skills.len() == 1 { "" } else { "s" },
        set.tools.len(),
        if set.tools.len() == 1 { "" } else { "s" },
        match (set.failures.len(), set.claimants.len()) {
            (0, 0) => String::new(),
            (f, 0) => format!(", {f} failed to load (see /skills)"),
            (0, c) => format!(
                ", {c} held back as new claimant{} of a known name (see /skills)",
                if c == 1 { "" } else { "s" }
            ),
            (f, c) => format!(
                ", {f} failed to load, {c} held back as new claimant{} of a known name (see /skills)",
                if c == 1 { "" } else { "s" }
            ),
        },
        match &watcher {
            Some(w) if !w.watched.is_empty() => format!(
                "watching {} for edits\n",
                w.watched
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        }
    );
    print!("{banner}");
    let mut console = Console::new(kernel, rt);
    match &console.agent {
        Some(a) => {
            let m = &a.chain().models()[0];
            println!("model: {} ({}) — type a message to talk", m.name, m.model);
        }
        None => print!("{}", chat::no_model_text()),
    }
    // Ctrl-C stops the run or `/call` in flight and stays in the console;
    // with neither, it ends the console (130).
    chat::install_console_ctrl_c(rt, console.agent.clone(), &console.current, &console.call);
    let _ = std::io::stdout().flush();
    let events = kernel.subscribe();
    if interactive {
        run_reedline(&mut console, events).map(|()| true)
    } else {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        rt.spawn(forward_events(events, move |line| tx.send(line).is_ok()));
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        let mut lines = stdin.lock().lines();
        let mut failed = false;
        while let Some(line) = lines.next() {
            while let Ok(msg) = rx.try_recv() {
                let _ = writeln!(out, "{msg}");
            }
            let line = line?;
            // An approval's answer is the next line of input.
            let mut ask = |_: &crate::store::ApprovalRecord, _: &dyn Fn() -> bool| {
                let l = lines.next()?.ok()?;
                println!("{l}");
                Some(l)
            };
            match parse(&line) {
                Ok(None) => continue,
                Ok(Some(cmd)) => match console.execute(cmd, &mut ask) {
                    Outcome::Quit => break,
                    Outcome::Text(t) => {
                        let _ = write!(out, "{}", crate::text::escape_control_keep_lines(&t));
                    }
                    // Errors go to standard error, and the console's exit
                    // status says a command failed (as a shell script's
                    // would with `set -e` in mind).
                    Outcome::Failed(t) => {
                        failed = true;
                        let _ = out.flush();
                        eprint!("{}", crate::text::escape_control_keep_lines(&t));
                    }
                },
                Err(e) => {
                    failed = true;
                    let _ = out.flush();
                    eprintln!("{e}");
                }
            }
            while let Ok(msg) = rx.try_recv() {
                let _ = writeln!(out, "{msg}");
            }
            let _ = out.flush();
        }
        Ok(!failed)
    }
}

fn run_reedline(
    console: &mut Console<'_>,
    events: tokio::sync::broadcast::Receiver<KernelEvent>,
) -> anyhow::Result<()> {
    let (kernel, rt) = (console.kernel, console.rt);
    use reedline::{
        ColumnarMenu, DefaultPrompt, DefaultPromptSegment, Emacs, ExternalPrinter,
        FileBackedHistory, KeyCode, KeyModifiers, MenuBuilder, Reedline, ReedlineEvent,
        ReedlineMenu, Signal, default_emacs_keybindings,
    };
    let printer = ExternalPrinter::<String>::new(64);
    let sender = printer.sender();
    rt.spawn(forward_events(events, move |line| {
        sender.send(line).is_ok()
    }));
    let mut keys = default_emacs_keybindings();
    keys.add_binding(
        KeyModifiers::NONE,
        KeyCode::Tab,
        ReedlineEvent::UntilFound(vec![
            ReedlineEvent::Menu("completion_menu".into()),
            ReedlineEvent::MenuNext,
        ]),
    );
    let mut editor = Reedline::create()
        .with_completer(Box::new(ConsoleCompleter {
            kernel: kernel.clone(),
        }))
        .with_menu(ReedlineMenu::EngineCompleter(Box::new(
            ColumnarMenu::default().with_name("completion_menu"),
        )))
        .with_edit_mode(Box::new(Emacs::new(keys)))
        .with_external_printer(printer);
    if let Ok(h) = FileBackedHistory::with_file(1000, kernel.data_dir().join("history.txt")) {
        editor = editor.with_history(Box::new(h));
    }
    let prompt = DefaultPrompt::new(
        DefaultPromptSegment::Basic("keel".into()),
        DefaultPromptSegment::Empty,
    );
    loop {
        match editor.read_line(&prompt)? {
            Signal::Success(line) => match parse(&line) {
                Ok(None) => {}
                Ok(Some(cmd)) => {
                    match console.execute(cmd, &mut |_, wanted| chat::read_terminal_line(wanted)) {
                        Outcome::Quit => break,
                        // On a terminal a failure is shown where the person
                        // looks, and the console goes on.
                        Outcome::Text(t) | Outcome::Failed(t) => {
                            print!("{}", crate::text::escape_control_keep_lines(&t))
                        }
                    }
                }
                Err(e) => println!("{e}"),
            },
            Signal::CtrlC => {}
            Signal::CtrlD => break,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst larger than the channel costs a "missed" line, not the
    /// console's view of every later reload.
    #[test]
    fn a_burst_of_events_is_reported_as_missed_and_later_events_still_show() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::broadcast::channel(4);
        let event = |i: usize| KernelEvent::ConfigReloaded(Ok(format!("e{i}")));
        for i in 0..10 {
            tx.send(event(i)).unwrap();
        }
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let shown = lines.clone();
        let count = || lines.lock().unwrap().len();
        rt.block_on(async {
            let fwd = tokio::spawn(forward_events(rx, move |l| {
                shown.lock().unwrap().push(l);
                true
            }));
            // Let the forwarder drain the burst (bounded: the current-thread
            // runtime runs it on each yield), then send one more.
            for _ in 0..1000 {
                if count() == 5 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            tx.send(event(10)).unwrap();
            drop(tx);
            fwd.await.unwrap();
        });
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "[reload] 6 events missed in a burst of changes; /skills shows the current state",
                "[config] e6",
                "[config] e7",
                "[config] e8",
                "[config] e9",
                "[config] e10",
            ]
        );
    }

    #[test]
    fn commands_parse_with_clear_errors() {
        assert_eq!(parse("  ").unwrap(), None);
        assert_eq!(
            parse("/call notes.add {\"text\": \"hi\"}").unwrap(),
            Some(ConsoleCommand::Call {
                tool: "notes.add".into(),
                args: serde_json::json!({"text": "hi"})
            })
        );
        assert!(
            parse("/call notes.add {bad")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(parse("/grant notes").unwrap_err().contains("usage"));
        assert!(
            parse("/skils")
                .unwrap_err()
                .contains("did you mean /skills")
        );
        assert_eq!(
            parse("/audit 5").unwrap(),
            Some(ConsoleCommand::Audit {
                limit: 5,
                json: false
            })
        );
        assert_eq!(
            parse("/audit --json 0").unwrap(),
            Some(ConsoleCommand::Audit {
                limit: 0,
                json: true
            })
        );
        assert_eq!(
            parse("/runs s_1 --json").unwrap(),
            Some(ConsoleCommand::Runs {
                session: Some("s_1".into()),
                json: true
            })
        );
        assert!(
            parse("/skills --jsn")
                .unwrap_err()
                .contains("no option `--jsn`")
        );
        assert!(parse("/tools extra").unwrap_err().contains("only --json"));
        assert!(parse("/audit ten").unwrap_err().contains("usage: /audit"));
        assert_eq!(
            parse("hello").unwrap(),
            Some(ConsoleCommand::Message("hello".into()))
        );
    }
}
