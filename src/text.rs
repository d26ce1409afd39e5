//! Text that reaches an operator's terminal or a text log.
//!
//! Much of what keel prints comes from a skill: a tool name, an approval's
//! target, an error message, a `keel.log` line, an audit reason. A skill
//! that can put a carriage return, an ANSI escape sequence or a newline in
//! such a string can overwrite what the operator reads — forge an approval
//! prompt that shows one thing and grants another, or add a fake line to
//! the audit log. [`escape_control`] is the one function every text front
//! end passes such strings through: it makes those characters visible
//! instead of letting the terminal act on them.
//!
//! Escaped, visibly and in Rust's own notation (so `\x1b[2J` reads as what
//! it is):
//! - C0 controls U+0000–U+001F (`\n`, `\r`, `\t` by name, the rest `\x1b`),
//!   DEL U+007F, and C1 controls U+0080–U+009F (`\u{9b}` is a one-character
//!   CSI on some terminals);
//! - bidirectional overrides and isolates U+202A–U+202E and U+2066–U+2069
//!   ("Trojan Source": text that displays in another order than it reads),
//!   plus the invisible marks U+200E, U+200F and U+061C.
//!
//! Nothing else changes, so ordinary text (accents, CJK, emoji) shows as
//! written. JSON output needs none of this (serde escapes control
//! characters) and is left alone. The function is idempotent: its output
//! holds no character it would escape.
//!
//! Colour is the other thing that reaches a terminal: [`paint`] wraps a
//! status word in a colour code by its [`Tone`], and only
//! `commands::Text::render` calls it, around a word it has escaped, when
//! [`colour_stdout`] says so (a terminal, no `NO_COLOR`). Nothing scans
//! printed text for words to colour.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is escaped by [`escape_control`].
pub fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
}

/// `s` with control and bidi-override characters made visible (see the
/// module docs). Borrows when there is nothing to escape.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_dangerous) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && is_dangerous(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_dangerous(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Like [`escape_control`], but keeps line breaks and tabs: for multi-line
/// text meant to be read as lines (a model's answer, a listing whose own
/// fields were escaped, a script's traceback). A `\r`, an escape sequence
/// or a bidi override is still escaped, so nothing can overwrite what is
/// already on the screen.
pub fn escape_control_keep_lines(s: &str) -> Cow<'_, str> {
    let kept = |c: char| c == '\n' || c == '\t';
    if !s.chars().any(|c| !kept(c) && is_dangerous(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut buf = [0u8; 4];
    for c in s.chars() {
        if kept(c) {
            out.push(c);
        } else {
            out.push_str(&escape_control(c.encode_utf8(&mut buf)));
        }
    }
    Cow::Owned(out)
}

/// A `tracing` field formatter that passes every field (the message
/// included) through [`escape_control`], so a log line is one line and
/// says what it says, whatever a skill put in it. Use it with
/// `tracing_subscriber::fmt().fmt_fields(keel::text::EscapedFields)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = EscapingVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'w> {
    writer: &'a mut tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl EscapingVisitor<'_, '_> {
    fn write(&mut self, name: &str, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let value = escape_control(value);
        self.result = if name == "message" {
            write!(self.writer, "{sep}{value}")
        } else {
            write!(self.writer, "{sep}{name}={value}")
        };
    }
}

impl tracing::field::Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field.name(), value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field.name(), &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_made_visible() {
        assert_eq!(escape_control("plain é 日本 🙂"), "plain é 日本 🙂");
        assert!(matches!(escape_control("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_control("a\r\x1b[2Jb\nc\td\x7f\u{9b}e"),
            "a\\r\\x1b[2Jb\\nc\\td\\x7f\\u{9b}e"
        );
        assert_eq!(escape_control("\0"), "\\x00");
        assert_eq!(
            escape_control("x\u{202e}gpj.exe\u{2066}\u{2069}"),
            "x\\u{202e}gpj.exe\\u{2066}\\u{2069}"
        );
        assert_eq!(
            escape_control_keep_lines("a\nb\rc\td\x1b"),
            "a\nb\\rc\td\\x1b"
        );
    }

    #[test]
    fn escaping_is_idempotent_and_leaves_no_dangerous_character() {
        // Every character up to U+3000 plus the bidi block, one at a time
        // and all together: the output never holds a character the
        // terminal would act on, and escaping again changes nothing.
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let once = escape_control(&all).into_owned();
        assert!(!once.chars().any(is_dangerous));
        assert_eq!(escape_control(&once), once.as_str());
        for c in all.chars() {
            let s = c.to_string();
            let e = escape_control(&s);
            assert!(!e.chars().any(is_dangerous), "{c:?}");
        }
    }
}

/// Whether to colour what goes to standard output: a terminal, and no
/// `NO_COLOR` (<https://no-color.org>) in the environment.
pub fn colour_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// How a status word reads, and so its colour on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// It worked, or is allowed (`ok`, `allow`, `done`): green.
    Good,
    /// It failed, or is refused (`FAILED`, `DENY`, `failed`): red.
    Bad,
    /// It waits on someone, or was held back (`ask`, `held back`): yellow.
    Warn,
}

/// `word` in `tone`'s colour. Only [`crate::commands::Text::render`]
/// calls this, around a word it escaped: colour codes never come from
/// what a skill wrote.
pub fn paint(tone: Tone, word: &str) -> String {
    let colour = match tone {
        Tone::Good => "\x1b[32m",
        Tone::Bad => "\x1b[31m",
        Tone::Warn => "\x1b[33m",
    };
    format!("{colour}{word}\x1b[0m")
}
