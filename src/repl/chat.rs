//! Talking to the agent from a terminal: the console's plain lines and
//! `keel ask`. Streams the answer as it arrives, shows tool calls as they
//! happen, asks the person about approvals, and turns Ctrl-C into a
//! cancellation of the run in flight.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent::{Agent, RunEvent, RunOutcome};
use crate::store::{ApprovalAnswer, ApprovalRecord, MessageRecord};
use crate::text::{escape_control as esc, escape_control_keep_lines};

/// Where a conversation's output goes: the answer, and everything else
/// (tool calls, approvals, states). `keel ask` sends the second to stderr
/// so stdout is the answer alone.
pub struct Sinks<'a> {
    pub answer: &'a mut dyn Write,
    pub notes: &'a mut dyn Write,
    /// Show "waiting for the model…" on `notes` when the model is slow to
    /// answer (for a person at a terminal; never in a pipe).
    pub waiting_hint: bool,
}

/// How long the model may be silent before the hint shows.
const WAITING_HINT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The hint, and what erases it (carriage return, clear to end of line).
const WAITING_HINT: &str = "… waiting for the model";
const ERASE_LINE: &str = "\r\x1b[K";

/// Reads a person's answer to an approval. The second argument tells
/// whether an answer is still wanted: the run can be cancelled (Ctrl-C) or
/// the request expire while the person thinks, and a reader that can wait
/// on it gives up then. `None` means no answer; if the request is still
/// pending, nobody can answer here and it is declined at once rather than
/// left to time out.
pub type AskPerson<'a> = &'a mut dyn FnMut(&ApprovalRecord, &dyn Fn() -> bool) -> Option<String>;

/// The run in flight, for the Ctrl-C handler.
pub type CurrentRun = Arc<Mutex<Option<String>>>;

/// Cancels the current run on Ctrl-C; with no run in flight, Ctrl-C ends
/// the process as usual (exit status 130).
pub fn install_ctrl_c(rt: &tokio::runtime::Runtime, agent: &Agent, current: &CurrentRun) {
    let agent = agent.clone();
    let current = current.clone();
    rt.spawn(async move {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            let run = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match run {
                Some(run) if agent.cancel(&run) => {}
                _ => std::process::exit(130),
            }
        }
    });
}

/// The console's Ctrl-C: stops the `/call` in flight, else cancels the
/// agent run in flight, else ends the process (exit status 130).
pub fn install_console_ctrl_c(
    rt: &tokio::runtime::Runtime,
    agent: Option<Agent>,
    current: &CurrentRun,
    call: &crate::commands::call::CurrentCall,
) {
    let (current, call) = (current.clone(), call.clone());
    rt.spawn(async move {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            let flag = call.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(flag) = flag {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let run = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match (run, &agent) {
                (Some(run), Some(agent)) if agent.cancel(&run) => {}
                _ => std::process::exit(130),
            }
        }
    });
}

/// Sends one message and follows its run to the end.
pub fn converse(
    agent: &Agent,
    rt: &tokio::runtime::Runtime,
    session: &str,
    text: &str,
    current: &CurrentRun,
    sinks: Sinks<'_>,
    mut ask: Option<AskPerson<'_>>,
) -> Result<RunOutcome, crate::agent::AgentError> {
    let _enter = rt.enter();
    let handle = agent.submit(session, text)?;
    *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.run_id.clone());
    let Sinks {
        answer,
        notes,
        waiting_hint,
    } = sinks;
    let mut mid_line = false;
    let mut events = handle.events;
    // While no tool runs and no person is asked, a silence is the model's.
    let (mut tools_running, mut hint_shown) = (0usize, false);
    let outcome = loop {
        let next = if waiting_hint && !hint_shown && tools_running == 0 && !mid_line {
            match rt.block_on(tokio::time::timeout(WAITING_HINT_AFTER, events.recv())) {
                Ok(e) => e,
                Err(_) => {
                    let _ = write!(notes, "{WAITING_HINT}");
                    let _ = notes.flush();
                    hint_shown = true;
                    continue;
                }
            }
        } else {
            rt.block_on(events.recv())
        };
        if hint_shown {
            let _ = write!(notes, "{ERASE_LINE}");
            let _ = notes.flush();
            hint_shown = false;
        }
        let Some(event) = next else {
            break RunOutcome::load(agent.kernel().store(), &handle.run_id)?;
        };
        match &event {
            RunEvent::ToolStarted { .. } => tools_running += 1,
            RunEvent::ToolFinished { .. } => tools_running = tools_running.saturating_sub(1),
            _ => {}
        }
        match event {
            RunEvent::Text(t) => {
                // Model text can carry what a tool result put in it.
                let _ = answer.write_all(escape_control_keep_lines(&t).as_bytes());
                let _ = answer.flush();
                mid_line = !t.ends_with('\n');
            }
            RunEvent::ToolStarted {
                name, arguments, ..
            } => {
                end_line(answer, &mut mid_line);
                let _ = writeln!(
                    notes,
                    "[tool] {} {}",
                    esc(&name),
                    esc(&one_line(&arguments, 120))
                );
            }
            RunEvent::ToolFinished {
                name,
                ok,
                summary,
                elapsed,
                ..
            } => {
                let _ = writeln!(
                    notes,
                    "[tool] {} {} ({}): {}",
                    esc(&name),
                    if ok { "ok" } else { "failed" },
                    format_elapsed(elapsed),
                    esc(&summary)
                );
            }
            RunEvent::Approval(rec) => {
                end_line(answer, &mut mid_line);
                match ask.as_deref_mut() {
                    Some(ask) => {
                        let _ = writeln!(notes, "{}", approval_prompt(&rec));
                        let _ = notes.flush();
                        answer_approval(agent, &rec, notes, ask);
                    }
                    // Nobody to ask: say no at once, once, with how to
                    // grant — no prompt that nobody will answer.
                    None => {
                        let _ = writeln!(
                            notes,
                            "{}: nobody can answer here, so no; {}",
                            approval_line(&rec),
                            grant_hint(&rec)
                        );
                        let _ = agent.answer(&rec.id, ApprovalAnswer::No);
                    }
                }
            }
            RunEvent::Compacted { messages } => {
                let _ = writeln!(
                    notes,
                    "[context] {messages} older messages were summarised to fit the model's context window"
                );
            }
            RunEvent::CompactionFailed { reason } => {
                let _ = writeln!(
                    notes,
                    "[context] {}; going on with the whole conversation",
                    esc(&reason)
                );
            }
            RunEvent::StreamCut { reason } => {
                end_line(answer, &mut mid_line);
                let _ = writeln!(
                    notes,
                    "[model] the answer above was cut ({}); asking again",
                    esc(&reason)
                );
            }
            RunEvent::State(_) => {}
            RunEvent::Finished(outcome) => break outcome,
        }
        let _ = notes.flush();
    };
    *current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    end_line(answer, &mut mid_line);
    Ok(outcome)
}

/// The approval prompt: what the skill wants, on what, from which tool
/// call, and exactly what `always` would store. Every part a skill can
/// Ends the answer's current line, if the streamed text left one open, so
/// a note (a tool line, an approval) starts on a line of its own.
fn end_line(answer: &mut dyn Write, mid_line: &mut bool) {
    if std::mem::take(mid_line) {
        let _ = writeln!(answer);
    }
    let _ = answer.flush();
}

/// influence is escaped, so the prompt cannot be redrawn by what it shows.
pub fn approval_prompt(rec: &ApprovalRecord) -> String {
    format!("{}; {}", approval_line(rec), always_grants(rec))
}

/// Who wants what, escaped, on one line.
fn approval_line(rec: &ApprovalRecord) -> String {
    let on = if rec.target.is_empty() {
        String::new()
    } else {
        format!(" on `{}`", esc(&rec.target))
    };
    format!(
        "[approval {}] {} wants `{}`{on} (tool {} with {})",
        esc(&rec.id),
        esc(&rec.skill),
        esc(&rec.capability),
        esc(&rec.tool),
        esc(&one_line(&rec.arguments, 120)),
    )
}

/// What answering `always` stores, in words: the exact rule, or that
/// `always` is not on offer for this request.
pub fn always_grants(rec: &ApprovalRecord) -> String {
    if rec.rule.is_empty() {
        "`always` is not offered: no rule names this target alone".to_string()
    } else {
        format!("always grants `{}`", esc(&rec.rule))
    }
}

/// What the person is asked to type: `always` only where a rule names the
/// target alone.
pub fn answer_prompt(rec: &ApprovalRecord) -> &'static str {
    if rec.rule.is_empty() {
        "allow? [y]es / [n]o: "
    } else {
        "allow? [y]es / [n]o / [a]lways: "
    }
}

/// How to allow a request for good without being asked: the exact rule.
fn grant_hint(rec: &ApprovalRecord) -> String {
    if rec.rule.is_empty() {
        "no single rule names this target; allow it in keel.toml if you must".to_string()
    } else {
        format!(
            "to allow it without asking: keel grant {} {}",
            esc(&rec.skill),
            esc(&rec.rule)
        )
    }
}

fn answer_approval(agent: &Agent, rec: &ApprovalRecord, notes: &mut dyn Write, ask: AskPerson<'_>) {
    let store = agent.kernel().store();
    // Cancelled, expired, or answered elsewhere: no longer pending.
    let settled = || match store.approval(&rec.id) {
        Ok(Some(r)) if r.state != "pending" => Some(r.state),
        _ => None,
    };
    let wanted = || settled().is_none();
    loop {
        let _ = write!(notes, "{}", answer_prompt(rec));
        let _ = notes.flush();
        let Some(line) = ask(rec, &wanted) else {
            if let Some(state) = settled() {
                let _ = writeln!(notes, "\n[approval {}] {state}", rec.id);
                return;
            }
            let _ = writeln!(
                notes,
                "\nnobody can answer here, so no; {}",
                grant_hint(rec)
            );
            let _ = agent.answer(&rec.id, ApprovalAnswer::No);
            return;
        };
        let Some(answer) = ApprovalAnswer::parse(&line) else {
            let _ = writeln!(notes, "please answer y, n or always");
            continue;
        };
        match agent.answer(&rec.id, answer) {
            Ok(r) if r.answer == Some(ApprovalAnswer::Always) => {
                let _ = writeln!(
                    notes,
                    "granted {} {} for good",
                    esc(&rec.skill),
                    esc(&rec.rule)
                );
            }
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(notes, "{}", esc(&e.to_string()));
                // `always` without a rule is refused; ask again.
                if answer == ApprovalAnswer::Always && rec.rule.is_empty() {
                    continue;
                }
            }
        }
        return;
    }
}

/// Reads a line from stdin when it is a terminal, giving up (`None`) once
/// `wanted` turns false. A plain blocking read would hold the console at
/// an approval prompt after Ctrl-C cancelled its run, until Enter.
pub fn read_terminal_line(wanted: &dyn Fn() -> bool) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let fd = std::io::stdin().as_raw_fd();
        loop {
            if !wanted() {
                return None;
            }
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `p` is one valid pollfd and the count says one.
            let ready = unsafe { libc::poll(&mut p, 1, 100) };
            if ready > 0 {
                break;
            }
            if ready < 0
                && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                return None;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = wanted;
    // A terminal in line mode has a whole line ready (or end of input).
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(n) if n > 0 => Some(line),
        _ => None,
    }
}

/// `12 ms`, `1.4 s`.
pub fn format_elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Text on one line, cut to `max` characters.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let mut cut: String = flat.chars().take(max).collect();
        cut.push('…');
        cut
    } else {
        flat
    }
}

/// A session's transcript for `/history`: who said what, tool calls with
/// their results, and where older turns were compacted.
pub fn format_history(records: &[MessageRecord]) -> String {
    let mut out = String::new();
    for r in records {
        let line = match r.kind.name() {
            "user" => format!("you: {}", r.content),
            "assistant" => {
                let mut s = String::new();
                if !r.content.is_empty() {
                    s.push_str(&format!("keel: {}", r.content));
                }
                if let Some(calls) = r
                    .tool_calls
                    .as_deref()
                    .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
                    && let Some(calls) = calls.as_array()
                {
                    for c in calls {
                        if !s.is_empty() {
                            s.push('\n');
                        }
                        s.push_str(&format!(
                            "[tool call] {} {}",
                            c["name"]
                                .as_str()
                                .unwrap_or_default()
                                .replacen("__", ".", 1),
                            one_line(c["arguments"].as_str().unwrap_or_default(), 120)
                        ));
                    }
                }
                s
            }
            "tool" => format!(
                "[tool {}] {}: {}",
                if r.is_error { "error" } else { "result" },
                r.name.as_deref().unwrap_or(""),
                one_line(&r.content, 120)
            ),
            "summary" => format!(
                "── compacted here: the messages above were summarised for the model ──\n[summary] {}",
                one_line(&r.content, 400)
            ),
            other => format!("[{other}] {}", r.content),
        };
        if !line.is_empty() {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        out.push_str("no messages yet\n");
    }
    out
}

/// Local model servers keel knows how to find, and what they serve.
pub fn probe_local_models() -> Vec<(String, String, Vec<String>)> {
    let mut found = Vec::new();
    for (what, port) in [("Ollama", 11434u16), ("llama.cpp", 8080)] {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            continue;
        }
        let base = format!("http://127.0.0.1:{port}/v1");
        let models = list_models(addr).unwrap_or_default();
        found.push((what.to_string(), base, models));
    }
    found
}

/// `GET /v1/models` with a plain socket: a short, best-effort look.
fn list_models(addr: std::net::SocketAddr) -> Option<Vec<String>> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(
        v["data"]
            .as_array()?
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// What to print when no model is configured.
pub fn no_model_text() -> String {
    let mut s = format!("keel: {}\n", crate::agent::NO_MODEL_HELP);
    for (what, base, models) in probe_local_models() {
        let model = models.first().map_or("MODEL", String::as_str);
        s.push_str(&format!(
            "found {what} at {base}{}: start keel with OPENAI_BASE_URL={base} OPENAI_MODEL={model}\n",
            if models.is_empty() {
                String::new()
            } else {
                format!(" (models: {})", models.join(", "))
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_flattens_and_cuts() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(format_elapsed(Duration::from_millis(12)), "12 ms");
        assert_eq!(format_elapsed(Duration::from_millis(1400)), "1.4 s");
    }
}
