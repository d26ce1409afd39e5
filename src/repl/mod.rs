//! The console: `/` commands over the kernel, with reload results shown as
//! they happen.
//!
//! On a terminal it uses reedline (history in the data dir, completion of
//! commands and tool names); on a pipe it reads plain lines, so scripts and
//! CI can drive it. Commands are parsed into [`ConsoleCommand`] once and run
//! by [`Console::execute`]; a line without `/` is a message to the agent
//! ([`chat`]), in the current session (made on the first message).

pub mod chat;

use std::io::{BufRead, IsTerminal, Write};

use serde_json::Value;

use crate::agent::Agent;
use crate::commands::{self, Front, Output};
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
        json: bool,
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
        "[PATH] [--json]  compile skills, show capabilities vs the policy",
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
            // The CLI's reading, without `-` (standard input is the
            // console's own).
            let args = commands::call::arguments(Some(json), None)
                .map_err(|e| e.text().render(Front::Console, false))?;
            ConsoleCommand::Call {
                tool: tool.to_string(),
                args,
            }
        }
        "reload" => ConsoleCommand::Reload {
            skill: (!args.is_empty()).then(|| args.to_string()),
        },
        "check" => {
            let (words, json) = listing(1).map_err(|_| {
                format!(
                    "usage: /check [PATH] [--json] (a skill, or a folder of skills), got `{args}`"
                )
            })?;
            ConsoleCommand::Check {
                path: words.first().map(std::path::PathBuf::from),
                json,
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

/// What a command produced.
pub enum Outcome {
    /// Its output: standard output, notes, the error and whether it
    /// failed ([`Output::exit`]; fed from a pipe, the console's exit
    /// status says a command failed as the CLI's would).
    Done(Output),
    Quit,
}

impl Outcome {
    /// The console's words for `out` (advice names `/grant`, not `keel
    /// grant`): what goes to the screen and what is the error, both
    /// coloured when `colour`.
    pub fn render(out: &Output, colour: bool) -> (String, Option<String>) {
        let mut text: String = out
            .notes
            .iter()
            .map(|n| format!("note: {}\n", n.render(Front::Console, colour)))
            .collect();
        text.push_str(&out.body(Front::Console, colour));
        let error = out
            .error
            .as_ref()
            .map(|e| format!("error: {}\n", e.render(Front::Console, colour)));
        (text, error)
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
    pub call: commands::call::CurrentCall,
    /// The last `/call` result, whole (`/last`).
    pub last: Option<String>,
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
        let no_session = || Output::text("no session yet: send a message, or /session switch ID\n");
        let out = match cmd {
            ConsoleCommand::Quit => return Outcome::Quit,
            ConsoleCommand::Last => Output::text(match &self.last {
                Some(whole) => format!("{whole}\n"),
                None => "no /call result yet\n".into(),
            }),
            // As `keel skills` shows them: scripts that do not compile or
            // load too, with file and line.
            ConsoleCommand::Skills { json } => Output::of(Ok(commands::skills::run(ctx)), json),
            ConsoleCommand::Tools { json } => Output::of(Ok(commands::tools::run(ctx)), json),
            ConsoleCommand::Call { tool, args } => {
                let mut screen = std::io::stdout();
                let person = commands::call::Person {
                    current: &self.call,
                    notes: &mut screen,
                    ask,
                };
                let called = commands::call::run(ctx, self.rt, &tool, args, Some(person));
                if let Ok(c) = &called {
                    self.last = Some(c.whole());
                }
                Output::of(called, false)
            }
            ConsoleCommand::Reload { skill } => {
                let report = kernel.reload();
                Output::text(if let Some(name) = &skill {
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
                })
            }
            ConsoleCommand::Check { path, json } => {
                Output::of(commands::check::run(ctx, path.as_deref()), json)
            }
            ConsoleCommand::Grants { json } => Output::of(commands::grants::run(ctx), json),
            ConsoleCommand::Grant { skill, capability } => {
                Output::of(commands::grant::run(ctx, &skill, &capability), false)
            }
            ConsoleCommand::Revoke { skill, capability } => {
                Output::of(commands::revoke::run(ctx, &skill, &capability), false)
            }
            ConsoleCommand::SkillState { skill, enabled } => {
                Output::of(commands::skill_state::run(ctx, &skill, enabled), false)
            }
            ConsoleCommand::Audit { limit, json } => {
                Output::of(commands::audit::run(ctx, limit), json)
            }
            ConsoleCommand::Sessions { json } => {
                Output::of(commands::sessions::run(ctx, self.session.as_deref()), json)
            }
            ConsoleCommand::SessionNew => match kernel.store().create_session("console") {
                Ok(s) => {
                    let text = format!("new session {}\n", s.id);
                    self.session = Some(s.id);
                    Output::text(text)
                }
                Err(e) => Output::failed(e.to_string()),
            },
            ConsoleCommand::SessionSwitch(id) => match kernel.store().session(&id) {
                Ok(Some(s)) => {
                    self.session = Some(s.id.clone());
                    Output::text(format!("switched to session {} ({})\n", s.id, s.title))
                }
                Ok(None) => Output::text(format!("no session `{id}` (see /sessions)\n")),
                Err(e) => Output::failed(e.to_string()),
            },
            ConsoleCommand::History => match &self.session {
                None => no_session(),
                Some(id) => match kernel.store().messages(id) {
                    Ok(m) => Output::text(chat::format_history(&m)),
                    Err(e) => Output::failed(e.to_string()),
                },
            },
            ConsoleCommand::Runs { session, json } => match session.or(self.session.clone()) {
                None => no_session(),
                Some(id) => Output::of(commands::runs::run(ctx, &id), json),
            },
            ConsoleCommand::Approvals { all, json } => {
                Output::of(commands::approvals::run(ctx, all), json)
            }
            ConsoleCommand::Approve { id, answer } => {
                Output::of(commands::approve::run(ctx, &id, &answer), false)
            }
            ConsoleCommand::Cancel => {
                let mine: Vec<String> = self
                    .agent
                    .iter()
                    .flat_map(|a| a.active_runs())
                    .filter(|(_, s)| Some(s) == self.session.as_ref())
                    .map(|(r, _)| r)
                    .collect();
                if mine.is_empty() {
                    Output::text("no run in flight in this session\n")
                } else {
                    for r in &mine {
                        if let Some(a) = &self.agent {
                            a.cancel(r);
                        }
                    }
                    Output::text(format!("cancelled {}\n", mine.join(", ")))
                }
            }
            ConsoleCommand::Help => {
                let mut s =
                    String::from("commands (a line without / is a message to the agent):\n");
                for (c, d) in COMMANDS {
                    s.push_str(&format!("  {c:<10} {d}\n"));
                }
                Output::text(s)
            }
            ConsoleCommand::Message(text) => self.message(&text, ask),
        };
        Outcome::Done(out)
    }

    fn message(&mut self, text: &str, ask: chat::AskPerson<'_>) -> Output {
        let Some(agent) = self.agent.clone() else {
            return Output::text(format!(
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
                Err(e) => return Output::failed(e.to_string()),
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
        match result {
            Ok(o) => match o.state.name() {
                "done" => Output::text(""),
                "cancelled" => Output::text("[cancelled]\n"),
                // The words of `keel ask`'s failure.
                _ => Output::failed(format!(
                    "the run failed: {}",
                    o.reason.as_deref().unwrap_or("no reason recorded")
                )),
            },
            Err(e) => Output::failed(e.to_string()),
        }
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
            if let Some(m) = a.chain().and_then(|c| c.models().first().cloned()) {
                println!("model: {} ({}) — type a message to talk", m.name, m.model);
            }
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
                    // What the CLI prints to standard output goes there;
                    // errors go to standard error; and the console's exit
                    // status says a command failed where the CLI's would
                    // (a check that found problems too), as a shell
                    // script's would with `set -e` in mind.
                    Outcome::Done(o) => {
                        let (text, error) = Outcome::render(&o, false);
                        let _ = write!(out, "{text}");
                        if let Some(e) = error {
                            let _ = out.flush();
                            eprint!("{e}");
                        }
                        failed |= !o.exit.is_success();
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
    let colour = crate::text::colour_stdout();
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
                        // looks, and the console goes on; status words in
                        // colour unless NO_COLOR says otherwise.
                        Outcome::Done(o) => {
                            let (text, error) = Outcome::render(&o, colour);
                            print!("{text}{}", error.unwrap_or_default());
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
