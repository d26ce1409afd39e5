//! What a command says, typed until a front end renders it.
//!
//! A command's words are a [`Text`]: plain runs, **status words** (`ok`,
//! `FAILED`, `DENY`, a run's state) marked with their [`Tone`] where they
//! are produced, and **references to other commands** ([`CommandRef`]:
//! "see `keel tools`") that each front end names its own way — the CLI as
//! `keel tools`, the console as `/tools`. Nothing is found again by
//! scanning rendered text: before, the console turned `keel grant` into
//! `/grant` by text replacement and colours came from matching words in
//! the printed lines, so a skill named `ok` or a reason quoting
//! `keel grants` changed what was shown.
//!
//! [`Text::render`] is the one place text becomes a `String`: every plain
//! run and status word is escaped there ([`crate::text::escape_control_keep_lines`],
//! idempotent, so fields escaped where they were read stay as they are),
//! and colour codes are added only around status words, only when asked
//! (a terminal, no `NO_COLOR`: [`crate::text::colour_stdout`]). A colour
//! code can therefore never come from a skill.
//!
//! [`Output`] is a command's whole result for either front end: the body
//! (text or `--json`), side notes, the error if it failed, and the exit
//! status the CLI ends with — which the console counts the same way (fed
//! from a pipe, a command that exits non-zero in the CLI fails there too).

use std::fmt;

use crate::text::{Tone, escape_control_keep_lines, paint};

/// Which front end renders a [`Text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The `keel` command line: commands are `keel NAME`.
    Cli,
    /// The console: commands are `/NAME`.
    Console,
}

/// A command both front ends have, named in advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    Skills,
    Tools,
    Call,
    Check,
    Grants,
    Grant,
    Revoke,
    Audit,
    Sessions,
    Runs,
    Approvals,
    Approve,
    /// `keel skill enable` / `/enable`.
    Enable,
    /// `keel skill disable` / `/disable`.
    Disable,
}

impl Command {
    /// The name both front ends share (`keel grant`, `/grant`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Skills => "skills",
            Self::Tools => "tools",
            Self::Call => "call",
            Self::Check => "check",
            Self::Grants => "grants",
            Self::Grant => "grant",
            Self::Revoke => "revoke",
            Self::Audit => "audit",
            Self::Sessions => "sessions",
            Self::Runs => "runs",
            Self::Approvals => "approvals",
            Self::Approve => "approve",
            Self::Enable => "enable",
            Self::Disable => "disable",
        }
    }

    /// A reference to this command with no arguments.
    pub fn bare(self) -> CommandRef {
        CommandRef {
            command: self,
            args: String::new(),
        }
    }

    /// A reference to this command with `args` (already escaped, or
    /// placeholders like `SKILL CAPABILITY`).
    pub fn with(self, args: impl Into<String>) -> CommandRef {
        CommandRef {
            command: self,
            args: args.into(),
        }
    }
}

/// A command named in advice, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRef {
    pub command: Command,
    pub args: String,
}

impl CommandRef {
    /// `keel grant notes kv` or `/grant notes kv`.
    pub fn render(&self, front: Front) -> String {
        let name = match (front, self.command) {
            // Subcommands of `keel skill` in the CLI.
            (Front::Cli, Command::Enable | Command::Disable) => {
                format!("keel skill {}", self.command.name())
            }
            (Front::Cli, c) => format!("keel {}", c.name()),
            (Front::Console, c) => format!("/{}", c.name()),
        };
        if self.args.is_empty() {
            name
        } else {
            format!("{name} {}", self.args)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Span {
    Plain(String),
    Status(Tone, String),
    Command(CommandRef),
}

/// Words for a person, typed until rendered (see the module docs).
/// `write!` appends plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(Vec<Span>);

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// Plain text.
    pub fn plain(s: impl Into<String>) -> Self {
        let mut t = Self::new();
        t.push(s);
        t
    }

    /// Appends plain text.
    pub fn push(&mut self, s: impl Into<String>) -> &mut Self {
        let s = s.into();
        if s.is_empty() {
            return self;
        }
        if let Some(Span::Plain(last)) = self.0.last_mut() {
            last.push_str(&s);
        } else {
            self.0.push(Span::Plain(s));
        }
        self
    }

    /// Appends a status word, coloured by `tone` on a terminal.
    pub fn status(&mut self, tone: Tone, word: impl Into<String>) -> &mut Self {
        self.0.push(Span::Status(tone, word.into()));
        self
    }

    /// Appends a status word padded with spaces to `width` characters (the
    /// padding is not coloured).
    pub fn status_padded(&mut self, tone: Tone, word: &str, width: usize) -> &mut Self {
        self.status(tone, word);
        let pad = width.saturating_sub(word.chars().count());
        self.push(" ".repeat(pad))
    }

    /// Appends a reference to another command.
    pub fn command(&mut self, c: CommandRef) -> &mut Self {
        self.0.push(Span::Command(c));
        self
    }

    /// Appends `other`.
    pub fn append(&mut self, other: Text) -> &mut Self {
        for span in other.0 {
            match span {
                Span::Plain(s) => {
                    self.push(s);
                }
                span => self.0.push(span),
            }
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0
            .iter()
            .all(|s| matches!(s, Span::Plain(p) if p.is_empty()))
    }

    /// The text for `front`, escaped, status words coloured when `colour`.
    pub fn render(&self, front: Front, colour: bool) -> String {
        let mut out = String::new();
        for span in &self.0 {
            match span {
                Span::Plain(s) => out.push_str(&escape_control_keep_lines(s)),
                Span::Status(tone, word) => {
                    let word = escape_control_keep_lines(word);
                    if colour {
                        out.push_str(&paint(*tone, &word));
                    } else {
                        out.push_str(&word);
                    }
                }
                Span::Command(c) => out.push_str(&escape_control_keep_lines(&c.render(front))),
            }
        }
        out
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s);
        Ok(())
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self::plain(s)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self::plain(s)
    }
}

/// Builds a [`Text`] from plain pieces and typed ones: `text!["see ",
/// Command::Tools.bare()]`.
#[macro_export]
macro_rules! text {
    ($($part:expr),* $(,)?) => {{
        let mut t = $crate::commands::Text::new();
        $( $crate::commands::output::Part::add($part, &mut t); )*
        t
    }};
}

/// Something [`text!`] can append.
pub trait Part {
    fn add(self, to: &mut Text);
}

impl Part for &str {
    fn add(self, to: &mut Text) {
        to.push(self);
    }
}

impl Part for String {
    fn add(self, to: &mut Text) {
        to.push(self);
    }
}

impl Part for &String {
    fn add(self, to: &mut Text) {
        to.push(self.as_str());
    }
}

impl Part for std::borrow::Cow<'_, str> {
    fn add(self, to: &mut Text) {
        to.push(self.into_owned());
    }
}

impl Part for CommandRef {
    fn add(self, to: &mut Text) {
        to.command(self);
    }
}

impl Part for Text {
    fn add(self, to: &mut Text) {
        to.append(self);
    }
}

/// How the CLI ends after a command (the console counts anything but
/// [`Exit::Success`] as a failed command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// The command worked but found problems (skills that failed to load,
    /// a check that found errors): the whole output is printed, then 1.
    Problems,
    /// The command failed: 1.
    Failed,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Problems | Self::Failed => 1,
        }
    }

    pub fn is_success(self) -> bool {
        self == Self::Success
    }
}

/// What goes to standard output (the console's screen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Text(Text),
    /// `--json`: pretty JSON, safe for a terminal, with its newline.
    Json(String),
}

/// A command's whole result, for either front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub body: Body,
    /// Side remarks: standard error in the CLI (`note: …`), before the
    /// body in the console.
    pub notes: Vec<Text>,
    /// Why the command failed: `keel: …` on standard error in the CLI,
    /// `error: …` in the console (standard error when piped).
    pub error: Option<Text>,
    pub exit: Exit,
}

impl Output {
    /// Text that is all there is to say.
    pub fn text(text: impl Into<Text>) -> Self {
        Self {
            body: Body::Text(text.into()),
            notes: Vec::new(),
            error: None,
            exit: Exit::Success,
        }
    }

    /// A failure: nothing on standard output, the reason on standard error.
    pub fn failed(error: impl Into<Text>) -> Self {
        Self {
            body: Body::Text(Text::new()),
            notes: Vec::new(),
            error: Some(error.into()),
            exit: Exit::Failed,
        }
    }

    /// A command's result as text or (`json`) its JSON.
    pub fn of<R: super::Render>(result: Result<R, super::CommandError>, json: bool) -> Self {
        let out = match result {
            Ok(out) => out,
            Err(e) => return Self::failed(e.text()),
        };
        let exit = if out.problems() {
            Exit::Problems
        } else {
            Exit::Success
        };
        if json {
            return match out.json() {
                Ok(j) => Self {
                    body: Body::Json(format!("{}\n", super::json_for_terminal(&j))),
                    notes: Vec::new(),
                    error: None,
                    exit,
                },
                Err(e) => Self::failed(format!("cannot write JSON: {e}")),
            };
        }
        Self {
            body: Body::Text(out.text()),
            notes: out.notes(),
            error: None,
            exit,
        }
    }

    /// The body as `front` shows it.
    pub fn body(&self, front: Front, colour: bool) -> String {
        match &self.body {
            Body::Text(t) => t.render(front, colour),
            Body::Json(j) => j.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn advice_names_each_front_end_s_own_command() {
        let t = text![
            "grant it with `",
            Command::Grant.with("notes kv"),
            "` (see `",
            Command::Grants.bare(),
            "`)"
        ];
        assert_eq!(
            t.render(Front::Cli, false),
            "grant it with `keel grant notes kv` (see `keel grants`)"
        );
        assert_eq!(
            t.render(Front::Console, false),
            "grant it with `/grant notes kv` (see `/grants`)"
        );
    }

    /// Colour comes only from status words, only when asked; a skill's
    /// text that looks like a status word, or carries its own escape
    /// sequence, is neither coloured nor able to colour anything.
    #[test]
    fn only_marked_status_words_are_coloured_and_nothing_else_reaches_the_terminal() {
        let mut t = Text::new();
        t.status(Tone::Good, "ok");
        let _ = writeln!(t, " ok FAILED \x1b[31mred\x1b[0m");
        t.status_padded(Tone::Bad, "deny", 6);
        t.push("|");
        assert_eq!(
            t.render(Front::Cli, false),
            "ok ok FAILED \\x1b[31mred\\x1b[0m\ndeny  |"
        );
        assert_eq!(
            t.render(Front::Cli, true),
            "\x1b[32mok\x1b[0m ok FAILED \\x1b[31mred\\x1b[0m\n\x1b[31mdeny\x1b[0m  |"
        );
        // A status word from the store is escaped too.
        let mut t = Text::new();
        t.status(Tone::Warn, "pend\x1b[2Jing");
        assert_eq!(t.render(Front::Cli, true), "\x1b[33mpend\\x1b[2Jing\x1b[0m");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Problems.code(), 1);
        assert_eq!(Exit::Failed.code(), 1);
    }
}
