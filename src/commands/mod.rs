//! One command layer for both front ends: the `keel` subcommands and the
//! console's `/` commands run the same code, so they cannot drift.
//!
//! # Design
//!
//! A command is a file here with one `run` function: it takes the kernel
//! (plus the command's typed arguments) and returns a typed output — the
//! records it found, not text — or a [`CommandError`]. The output
//! implements [`Render`]: the same [`Render::text`] for the CLI and the
//! console, and [`Render::json`] for `--json`. Only presentation is left
//! to each front end:
//!
//! - the CLI prints the text (status words coloured on a terminal, see
//!   [`Render::coloured`]) or the JSON, prints [`Render::notes`] and
//!   errors on standard error, and exits 1 when [`Render::problems`] says
//!   the command found something wrong (a skill that failed to load) or
//!   the command failed;
//! - the console shows the text with advice in its own words
//!   ([`crate::repl::in_console_words`]: `/grant` for `keel grant`), and an
//!   error as a failed command (`error: …`: standard error and exit status
//!   1 when fed from a pipe).
//!
//! Shared: skills, tools, check, grants, grant, revoke, audit, sessions,
//! runs, approvals, approve. Left to one front end, because they are about
//! that front end: `ask`, `call` (the console asks the person at it and
//! cuts long results), `skill new|accept`, `docs`; the console's session,
//! history, cancel, reload and last. `keel check PATH` outside the skill
//! folders builds a kernel of its own for that path first (the console
//! refuses such a path and says to use `keel check`).
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
pub mod check;
pub mod grant;
pub mod grants;
pub mod revoke;
pub mod runs;
pub mod sessions;
pub mod skill_state;
pub mod skills;
pub mod tools;

use crate::Kernel;

/// What a command produced, for either front end.
pub trait Render {
    /// What a person reads: the same in the CLI and the console (which
    /// names its own commands in advice). Escaped: nothing a skill wrote
    /// can move the cursor or pretend to be another line.
    fn text(&self) -> String;

    /// What `--json` prints: pretty JSON, fields in the records' own order
    /// (a `serde_json::Value` would sort them).
    fn json(&self) -> serde_json::Result<String>;

    /// The command worked but found problems (skills that failed to
    /// load): `keel` exits 1 after printing the whole listing.
    fn problems(&self) -> bool {
        false
    }

    /// Side remarks (a grant for a skill not loaded right now): standard
    /// error in the CLI, before the text in the console.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the text has status words (`ok`, `FAILED`, `DENY`, …) worth
    /// colouring on a terminal ([`crate::text::colour_status`]).
    fn coloured(&self) -> bool {
        false
    }
}

/// Why a command failed. The messages name the CLI's commands; the console
/// rewrites them into its own (`/grants`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The database could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A capability argument that does not parse.
    #[error(transparent)]
    Capability(#[from] crate::capability::CapabilityError),
    /// A skill argument that cannot be a skill's name.
    #[error("`{0}` is not a skill name (see `keel skills`)")]
    NotASkillName(String),
    /// `revoke` of a grant that is not there.
    #[error("skill `{skill}` has no grant `{capability}` (see `keel grants`)")]
    NoSuchGrant { skill: String, capability: String },
    /// An answer to an approval that is not yes, no or always.
    #[error("`{0}` is not an answer; use yes, no or always")]
    NotAnAnswer(String),
    /// An approval that cannot take the answer (none, expired, answered).
    #[error(transparent)]
    Answer(#[from] crate::store::AnswerError),
    /// A path argument that is not there.
    #[error("{} does not exist", .0.display())]
    NoSuchPath(std::path::PathBuf),
    /// `check` of a path this kernel does not load skills from.
    #[error(
        "{} is outside this workspace's skill folders; check it with `keel check {}` (it loads the skills there on their own)",
        .0.display(), .0.display()
    )]
    OutsideSearchPath(std::path::PathBuf),
    /// `check` found no skill (in the given path, or at all).
    #[error(
        "no skills found{}; a skill is a folder with skill.toml or SKILL.md, or a one-file script with its manifest in a leading comment",
        check::where_(.0)
    )]
    NothingToCheck(Option<std::path::PathBuf>),
    /// A session id that names no session.
    #[error("no session `{0}` (see `keel sessions`)")]
    NoSuchSession(String),
    /// A skill that cannot be disabled or enabled (unknown, reserved).
    #[error(transparent)]
    SkillState(#[from] crate::kernel::SkillStateError),
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
