//! One command layer for both front ends: the `keel` subcommands and the
//! console's `/` commands run the same code, so they cannot drift.
//!
//! # Design
//!
//! A command is a file here with one `run` function: it takes the kernel
//! (plus the command's typed arguments) and returns a typed output — the
//! records it found, not text — or a [`CommandError`]. The output
//! implements [`Render`]: one [`Render::text`] for the CLI and the
//! console, and [`Render::json`] for `--json`. [`Output::of`] turns either
//! into what a front end prints: the body, notes, the error, and the exit
//! status ([`Exit`]). The words stay typed until then ([`Text`], see
//! [`output`]): status words (`ok`, `FAILED`, `DENY`, a run's state) are
//! marked where they are produced, and advice that names a command is a
//! [`CommandRef`]. Only presentation is left to each front end:
//!
//! - the CLI renders for [`Front::Cli`] (`keel grant …`), colours status
//!   words when standard output is a terminal and `NO_COLOR` is unset,
//!   prints notes and the error (`keel: …`) on standard error, and exits
//!   with the output's status: 1 when the command failed or found
//!   problems (a skill that failed to load, a check with errors);
//! - the console renders for [`Front::Console`] (`/grant …`), coloured on
//!   a terminal under the same rules, and counts a command whose CLI twin
//!   would exit non-zero as failed: fed from a pipe, its error goes to
//!   standard error and the console's own exit status is 1 at the end.
//!
//! Shared: skills, tools, call, check, grants, grant, revoke, audit,
//! sessions, runs, approvals, approve. `call` takes a person to answer an
//! `ask` (the console, or `keel call` on a terminal) and renders its result
//! as one JSON line for the CLI, pretty and cut for the console (which
//! keeps it whole for `/last`). Left to one front end, because they are
//! about that front end: `ask`, `skill new|accept`, `docs`; the console's
//! session, history, cancel, reload and last. `keel check PATH` outside
//! the skill folders builds a kernel of its own for that path first
//! ([`check::outside_search_folder`] says which folder to search; the
//! console refuses such a path and says to use `keel check`).
//!
//! Known limit: advice written below this layer as text — a gate's denial
//! raised through a script ("grant it with `keel grant …`") — reaches
//! the console as the script's error, in the CLI's words. Tool errors that
//! are typed (no such tool, a skill that did not load) are rendered here
//! with [`CommandRef`]s ([`call::tool_error_text`]).
//!
//! Before this layer each front end had its own copy of each command, and
//! they had drifted: the console did not list skills that failed to
//! compile, `/grant` accepted a name that is not a skill name and said
//! less than `keel grant`, `/revoke` of a missing grant was not a failure,
//! and `/skills` never said how programs are confined. Tests drive the
//! real binary both ways and compare the text (tests/commands.rs).

pub mod approvals;
pub mod approve;
pub mod audit;
pub mod call;
pub mod check;
pub mod grant;
pub mod grants;
pub mod output;
pub mod revoke;
pub mod runs;
pub mod sessions;
pub mod skill_state;
pub mod skills;
pub mod tools;

pub use output::{Body, Command, CommandRef, Exit, Front, Output, Text};

use crate::Kernel;
use crate::text::Tone;

/// What a command produced, for either front end.
pub trait Render {
    /// What a person reads: the same in the CLI and the console, except
    /// that each names its own commands in advice ([`CommandRef`]). Status
    /// words are marked ([`Text::status`]) and coloured only on a terminal.
    fn text(&self) -> Text;

    /// What `--json` prints: pretty JSON, fields in the records' own order
    /// (a `serde_json::Value` would sort them).
    fn json(&self) -> serde_json::Result<String>;

    /// The command worked but found problems (skills that failed to
    /// load): `keel` exits 1 after printing the whole listing, and the
    /// console counts the command as failed.
    fn problems(&self) -> bool {
        false
    }

    /// Side remarks (a grant for a skill not loaded right now): standard
    /// error in the CLI, before the text in the console.
    fn notes(&self) -> Vec<Text> {
        Vec::new()
    }
}

/// Why a command failed. [`CommandError::text`] names each front end's own
/// commands; `Display` is the CLI's words (for `anyhow` chains).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The database could not be read or written.
    Store(#[from] crate::store::StoreError),
    /// A capability argument that does not parse.
    Capability(#[from] crate::capability::CapabilityError),
    /// A skill argument that cannot be a skill's name.
    NotASkillName(String),
    /// `revoke` of a grant that is not there.
    NoSuchGrant { skill: String, capability: String },
    /// An answer to an approval that is not yes, no or always.
    NotAnAnswer(String),
    /// An approval that cannot take the answer (none, expired, answered).
    Answer(#[from] crate::store::AnswerError),
    /// A path argument that is not there.
    NoSuchPath(std::path::PathBuf),
    /// `check` of a path this kernel does not load skills from.
    OutsideSearchPath(std::path::PathBuf),
    /// `check` found no skill (in the given path, or at all).
    NothingToCheck(Option<std::path::PathBuf>),
    /// A session id that names no session.
    NoSuchSession(String),
    /// `call` arguments that are not a JSON value.
    BadArguments {
        /// The arguments as given (escaped).
        given: String,
        /// What the JSON parser said.
        error: String,
    },
    /// `call` arguments that could not be read (standard input).
    ArgumentsUnreadable(String),
    /// The tool call failed.
    Tool(#[source] crate::tool::ToolError),
    /// A skill that cannot be disabled or enabled (unknown, reserved).
    SkillState(#[from] crate::kernel::SkillStateError),
}

impl CommandError {
    /// The message, with advice naming commands typed.
    pub fn text(&self) -> Text {
        use crate::text::escape_control as esc;
        match self {
            Self::Store(e) => Text::plain(e.to_string()),
            Self::Capability(e) => Text::plain(e.to_string()),
            Self::Answer(e) => Text::plain(e.to_string()),
            Self::NotASkillName(name) => crate::text![
                format!("`{name}` is not a skill name (see `"),
                Command::Skills.bare(),
                "`)"
            ],
            Self::NoSuchGrant { skill, capability } => crate::text![
                format!("skill `{skill}` has no grant `{capability}` (see `"),
                Command::Grants.bare(),
                "`)"
            ],
            Self::NotAnAnswer(a) => {
                Text::plain(format!("`{a}` is not an answer; use yes, no or always"))
            }
            Self::NoSuchPath(p) => Text::plain(format!("{} does not exist", p.display())),
            // The console cannot check such a path: this names the CLI in
            // both front ends.
            Self::OutsideSearchPath(p) => Text::plain(format!(
                "{} is outside this workspace's skill folders; check it with `keel check {}` (it loads the skills there on their own)",
                p.display(),
                p.display()
            )),
            Self::NothingToCheck(scope) => Text::plain(format!(
                "no skills found{}; a skill is a folder with skill.toml or SKILL.md, or a one-file script with its manifest in a leading comment",
                check::where_(scope)
            )),
            Self::NoSuchSession(id) => crate::text![
                format!("no session `{id}` (see `"),
                Command::Sessions.bare(),
                "`)"
            ],
            Self::BadArguments { given, error } => Text::plain(format!(
                "arguments are not valid JSON ({error}): {given}; pass an object like {{\"text\": \"hi\"}}"
            )),
            Self::ArgumentsUnreadable(e) => Text::plain(format!(
                "cannot read the arguments from standard input: {}",
                esc(e)
            )),
            Self::Tool(e) => call::tool_error_text(e),
            Self::SkillState(e) => Text::plain(e.to_string()),
        }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text().render(Front::Cli, false))
    }
}

/// A decision word of the audit log or a check (`allow`, `deny`, `DENY`,
/// `ask:approved`, …) and how it reads.
pub fn decision_tone(word: &str) -> Tone {
    match word {
        "allow" | "ask:approved" => Tone::Good,
        "deny" | "DENY" | "ask:denied" => Tone::Bad,
        _ => Tone::Warn,
    }
}

/// A run's or approval's state (`done`, `failed`, `pending`, …) and how it
/// reads.
pub fn state_tone(state: &str) -> Tone {
    match state {
        "done" | "approved" => Tone::Good,
        "failed" | "denied" => Tone::Bad,
        _ => Tone::Warn,
    }
}

/// `--json` text made safe to show on a terminal and still JSON: the
/// characters [`crate::text::escape_control`] would make visible (DEL, C1
/// controls, bidi overrides — serde leaves them raw in strings, where they
/// are valid JSON) as `\uXXXX` escapes. They occur only inside strings, so
/// the result parses to the same value.
pub fn json_for_terminal(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if crate::text::is_dangerous(c) && c != '\n' {
            // All of them are in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The context every command runs in.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub kernel: &'a Kernel,
}

impl<'a> Ctx<'a> {
    pub fn new(kernel: &'a Kernel) -> Self {
        Self { kernel }
    }
}

/// Before a listing of runs: fails the runs whose process died, so the
/// listing shows them failed (interrupted) rather than `running` forever.
/// A listing still works if this cannot be done (say, the database is
/// read-only); the warning says why.
pub fn settle_dead_runs(kernel: &Kernel) {
    if let Err(e) = crate::agent::owner::recover_dead_runs(kernel.store()) {
        tracing::warn!(error = %e, "cannot mark the runs of stopped processes as failed");
    }
}

#[cfg(test)]
mod tests {
    use super::json_for_terminal;

    /// A skill's text with a bidi override, DEL and a C1 CSI, as `--json`
    /// in the console: still the same JSON value, and nothing left that
    /// the terminal would act on or the console would have to mangle.
    #[test]
    fn json_for_a_terminal_is_the_same_value_with_nothing_to_escape() {
        let value = serde_json::json!({
            "reason": "ok\u{202e}txt.exe\u{7f}\u{9b}2J\n\ttab \"quoted\" \\ é 日本",
            "list": ["\u{2066}", "\u{200f}", "plain"],
        });
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        assert!(pretty.chars().any(crate::text::is_dangerous));
        let shown = json_for_terminal(&pretty);
        assert!(
            !shown
                .chars()
                .any(|c| c != '\n' && crate::text::is_dangerous(c)),
            "{shown:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, value);
        assert_eq!(crate::text::escape_control_keep_lines(&shown), shown);
    }
}
