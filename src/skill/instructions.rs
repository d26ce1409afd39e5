//! `SKILL.md`: the Agent Skills format, parsed and checked without running
//! anything.
//!
//! A `SKILL.md` is YAML front matter between two `---` lines, then a
//! markdown body for the model. The front matter is read by a real YAML
//! 1.2 parser (saphyr's event parser), so quoting, block scalars
//! (`description: >`), comments and flow sequences mean what they mean
//! in YAML; every key keeps the line it was written on, so each problem is
//! reported as `SKILL.md:LINE: message`.
//!
//! The format's rules ([`Instructions::problems`]):
//! - `name` (required): 1–64 characters of `a-z`, `0-9` and `-`, no
//!   leading, trailing or doubled hyphen, equal to the folder's name;
//! - `description` (required): 1–1,024 characters;
//! - `compatibility` (optional): 1–500 characters;
//! - `license` (optional): text;
//! - `metadata` (optional): a map of text to text;
//! - `allowed-tools` (optional, experimental): space-separated tool names.
//!   keel shows it to the operator and grants nothing for it.
//!
//! Other keys (other agents' extensions) are kept out and reported as
//! warnings, not errors: a collection written for another agent still
//! loads. Anchors and aliases are refused (nothing in the format needs
//! them, and they are how a small YAML text expands into a huge one), and
//! nesting is bounded.
//!
//! Parsing is pure: text in, [`Instructions`] or a [`FrontMatterIssue`]
//! out. A leading byte-order mark is skipped and CRLF line ends are fine;
//! tabs used as indentation are a YAML error like any other.

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Longest `name`, in characters.
pub const MAX_NAME: usize = 64;
/// Longest `description`, in characters.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest `compatibility`, in characters.
pub const MAX_COMPATIBILITY: usize = 500;
/// Deepest nesting of maps and lists in the front matter.
const MAX_DEPTH: usize = 8;

/// One problem with a `SKILL.md`, at a line of the file (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontMatterIssue {
    pub line: usize,
    pub message: String,
}

impl FrontMatterIssue {
    fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// A parsed `SKILL.md`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instructions {
    pub name: Option<String>,
    pub description: Option<String>,
    pub license: Option<String>,
    pub compatibility: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// `allowed-tools`, split on spaces. Shown, never granted.
    pub allowed_tools: Vec<String>,
    /// The markdown after the front matter, trimmed.
    pub body: String,
    /// Keys the format does not define (ignored), and where.
    pub unknown: Vec<FrontMatterIssue>,
    /// Values of the wrong shape (a list where text belongs, …): errors
    /// that [`problems`](Self::problems) reports.
    shape: Vec<FrontMatterIssue>,
    /// The line of each key that was present.
    lines: BTreeMap<String, usize>,
}

/// A node of the front matter, with the line it starts on.
#[derive(Debug)]
enum Node {
    /// A scalar; `plain` for an unquoted one (where `null`/`~`/empty mean
    /// nothing).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<(usize, Node)>),
    Map(Vec<(String, usize, Node)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "text",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a map",
        }
    }

    /// The text of a scalar; `None` for YAML's null.
    fn text(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, plain } => {
                let null = *plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                (!null).then_some(text.as_str())
            }
            _ => None,
        }
    }
}

/// Splits a `SKILL.md` into its front matter (with the line it starts on)
/// and body. `None` when it has no front matter.
fn split(text: &str) -> Option<(&str, &str)> {
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    // The closing `---` is a line of its own.
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

/// Reads events into a node tree, refusing aliases, anchors and deep
/// nesting. `line_offset` turns the parser's lines into the file's.
struct Reader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    line_offset: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, usize), FrontMatterIssue> {
        match self.parser.next_event() {
            Some(Ok((event, span))) => Ok((event, span.start.line() + self.line_offset)),
            Some(Err(e)) => Err(FrontMatterIssue::new(
                e.marker().line() + self.line_offset,
                format!("the front matter is not valid YAML: {}", e.info()),
            )),
            None => Err(FrontMatterIssue::new(
                self.line_offset,
                "the front matter ended unexpectedly",
            )),
        }
    }

    /// The node that starts with `event`.
    fn node(
        &mut self,
        event: Event<'a>,
        line: usize,
        depth: usize,
    ) -> Result<Node, FrontMatterIssue> {
        let anchored = match &event {
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(anchor, _)
            | Event::MappingStart(anchor, _) => *anchor != 0,
            _ => false,
        };
        if anchored || matches!(event, Event::Alias(_)) {
            return Err(FrontMatterIssue::new(
                line,
                "YAML anchors and aliases (`&name`, `*name`) are not supported in SKILL.md front matter; write the value out",
            ));
        }
        if depth > MAX_DEPTH {
            return Err(FrontMatterIssue::new(
                line,
                format!("the front matter nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        match event {
            Event::Scalar(text, style, _, _) => Ok(Node::Scalar {
                text: text.into_owned(),
                plain: style == ScalarStyle::Plain,
            }),
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                loop {
                    let (e, l) = self.next()?;
                    if e == Event::SequenceEnd {
                        return Ok(Node::Seq(items));
                    }
                    items.push((l, self.node(e, l, depth + 1)?));
                }
            }
            Event::MappingStart(..) => {
                let mut entries: Vec<(String, usize, Node)> = Vec::new();
                loop {
                    let (e, l) = self.next()?;
                    if e == Event::MappingEnd {
                        return Ok(Node::Map(entries));
                    }
                    let key = match self.node(e, l, depth + 1)? {
                        Node::Scalar { text, .. } => text,
                        other => {
                            return Err(FrontMatterIssue::new(
                                l,
                                format!("a key must be text, not {}", other.kind()),
                            ));
                        }
                    };
                    if entries.iter().any(|(k, _, _)| *k == key) {
                        return Err(FrontMatterIssue::new(
                            l,
                            format!("`{key}` appears twice; keep one"),
                        ));
                    }
                    let (e, vl) = self.next()?;
                    let value = self.node(e, vl, depth + 1)?;
                    entries.push((key, l, value));
                }
            }
            other => Err(FrontMatterIssue::new(
                line,
                format!("unexpected YAML event {other:?}"),
            )),
        }
    }
}

/// Parses front matter text (which starts on file line `first_line`).
fn parse_yaml(yaml: &str, first_line: usize) -> Result<Node, FrontMatterIssue> {
    let mut r = Reader {
        parser: Parser::new_from_str(yaml),
        line_offset: first_line - 1,
    };
    let mut root = None;
    loop {
        let (event, line) = r.next()?;
        match event {
            Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            e if root.is_none() => root = Some(r.node(e, line, 0)?),
            _ => {
                return Err(FrontMatterIssue::new(
                    line,
                    "the front matter holds more than one YAML document",
                ));
            }
        }
    }
    Ok(root.unwrap_or(Node::Map(Vec::new())))
}

impl Instructions {
    /// Parses a `SKILL.md`. An error means there is no usable front matter
    /// (missing, unterminated, not YAML, not a map); the format's rules are
    /// checked by [`problems`](Self::problems).
    pub fn parse(text: &str) -> Result<Self, FrontMatterIssue> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if !(text.starts_with("---\n") || text.starts_with("---\r\n")) {
            return Err(FrontMatterIssue::new(
                1,
                "no front matter: SKILL.md must start with a `---` line, then `name: …` and `description: …`, then `---`",
            ));
        }
        let Some((yaml, body)) = split(text) else {
            return Err(FrontMatterIssue::new(
                1,
                "the front matter is not closed: add a `---` line after its last key",
            ));
        };
        let root = parse_yaml(yaml, 2)?;
        let Node::Map(entries) = root else {
            return Err(FrontMatterIssue::new(
                2,
                format!(
                    "the front matter must be a map of keys (`name: …`), not {}",
                    root.kind()
                ),
            ));
        };
        let mut out = Instructions {
            body: body.trim().to_string(),
            ..Default::default()
        };
        for (key, line, value) in entries {
            out.lines.insert(key.clone(), line);
            let mut text_of = |key: &str, value: &Node| -> Option<String> {
                match value {
                    Node::Scalar { .. } => value.text().map(str::to_string),
                    other => {
                        out.shape.push(FrontMatterIssue::new(
                            line,
                            format!("`{key}` must be text, not {}", other.kind()),
                        ));
                        None
                    }
                }
            };
            match key.as_str() {
                "name" => out.name = text_of("name", &value),
                "description" => out.description = text_of("description", &value),
                "license" => out.license = text_of("license", &value),
                "compatibility" => out.compatibility = text_of("compatibility", &value),
                "allowed-tools" => match &value {
                    // The format says a space-separated string; a YAML list
                    // (as some agents write it) means the same.
                    Node::Seq(items) => {
                        for (l, item) in items {
                            match item.text() {
                                Some(t) => out.allowed_tools.push(t.to_string()),
                                None => out.shape.push(FrontMatterIssue::new(
                                    *l,
                                    "`allowed-tools` entries must be tool names",
                                )),
                            }
                        }
                    }
                    _ => {
                        if let Some(t) = text_of("allowed-tools", &value) {
                            out.allowed_tools = t.split_whitespace().map(str::to_string).collect();
                        }
                    }
                },
                "metadata" => match value {
                    Node::Map(items) => {
                        for (k, l, v) in items {
                            match v {
                                Node::Scalar { text, .. } => {
                                    out.metadata.insert(k, text);
                                }
                                other => out.shape.push(FrontMatterIssue::new(
                                    l,
                                    format!(
                                        "`metadata.{k}` must be text, not {} (metadata maps text to text)",
                                        other.kind()
                                    ),
                                )),
                            }
                        }
                    }
                    v if v.text().is_none() && matches!(v, Node::Scalar { .. }) => {}
                    other => out.shape.push(FrontMatterIssue::new(
                        line,
                        format!("`metadata` must be a map of text to text, not {}", other.kind()),
                    )),
                },
                _ => out.unknown.push(FrontMatterIssue::new(
                    line,
                    format!("unknown field `{key}` (not part of the Agent Skills format); keel ignores it"),
                )),
            }
        }
        Ok(out)
    }

    /// The line a key was written on (the front matter's first line when
    /// it is missing).
    pub fn line_of(&self, key: &str) -> usize {
        self.lines.get(key).copied().unwrap_or(2)
    }

    /// Every way this `SKILL.md` breaks the format's rules, for a skill in
    /// folder `folder` (an instructions skill, whose `name` must be the
    /// folder's). Empty when it is valid.
    pub fn problems(&self, folder: &str) -> Vec<FrontMatterIssue> {
        self.check(Some(folder))
    }

    /// The problems of a keel skill's `SKILL.md`: its name and description
    /// are the manifest's, so neither is required here; the other rules
    /// apply.
    pub fn problems_beside_manifest(&self) -> Vec<FrontMatterIssue> {
        self.check(None)
    }

    fn check(&self, folder: Option<&str>) -> Vec<FrontMatterIssue> {
        let mut out = self.shape.clone();
        let chars = |s: &str| s.chars().count();
        let required = folder.is_some();
        let folder = folder.unwrap_or_default();
        match self.name.as_deref() {
            _ if !required => {}
            None if !self.lines.contains_key("name") => out.push(FrontMatterIssue::new(
                2,
                format!("missing `name`: add `name: {folder}` (the folder's name)"),
            )),
            None => out.push(FrontMatterIssue::new(
                self.line_of("name"),
                format!("`name` is empty: write `name: {folder}` (the folder's name)"),
            )),
            Some(name) => {
                if let Some(why) = name_problem(name) {
                    out.push(FrontMatterIssue::new(
                        self.line_of("name"),
                        format!("invalid name `{name}`: {why}"),
                    ));
                } else if name != folder {
                    out.push(FrontMatterIssue::new(
                        self.line_of("name"),
                        format!(
                            "`name: {name}` does not match its folder `{folder}`: rename one so they are equal"
                        ),
                    ));
                }
            }
        }
        match self.description.as_deref().map(str::trim) {
            None | Some("") if !required => {}
            None | Some("") => out.push(FrontMatterIssue::new(
                self.line_of("description"),
                "missing `description`: say in one or two sentences what the skill does and when to use it",
            )),
            Some(d) if chars(d) > MAX_DESCRIPTION => out.push(FrontMatterIssue::new(
                self.line_of("description"),
                format!(
                    "`description` is {} characters; the format allows at most {MAX_DESCRIPTION} (move the details into the body)",
                    chars(d)
                ),
            )),
            Some(_) => {}
        }
        if self.lines.contains_key("compatibility") {
            match self.compatibility.as_deref().map(str::trim) {
                None | Some("") => out.push(FrontMatterIssue::new(
                    self.line_of("compatibility"),
                    "`compatibility` is empty: remove it or say what the skill needs",
                )),
                Some(c) if chars(c) > MAX_COMPATIBILITY => out.push(FrontMatterIssue::new(
                    self.line_of("compatibility"),
                    format!(
                        "`compatibility` is {} characters; the format allows at most {MAX_COMPATIBILITY}",
                        chars(c)
                    ),
                )),
                Some(_) => {}
            }
        }
        out.sort_by_key(|p| p.line);
        out
    }
}

/// Why `name` is not a valid Agent Skills name, if it is not.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Some("use 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("use only lowercase letters a-z, digits and `-` (e.g. `pdf-forms`)");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("it must not start or end with `-`");
    }
    if name.contains("--") {
        return Some("it must not contain `--`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str, folder: &str) -> Vec<(usize, String)> {
        match Instructions::parse(text) {
            Ok(i) => i
                .problems(folder)
                .into_iter()
                .map(|p| (p.line, p.message))
                .collect(),
            Err(e) => vec![(e.line, e.message)],
        }
    }

    #[test]
    fn the_full_format_parses_with_lines() {
        let text = "---\nname: pdf\ndescription: >\n  Extract text from PDFs.\n  Use for forms.\nlicense: Proprietary. LICENSE.txt has complete terms\ncompatibility: \"Requires python3 and pypdf\"\nmetadata:\n  author: example-org\n  version: \"1.0\"\n  rev: 3\nallowed-tools: Bash(python3:*) Read\n# a comment\n---\n\n# PDF\n\nUse scripts/extract.py.\n";
        let i = Instructions::parse(text).unwrap();
        assert_eq!(i.name.as_deref(), Some("pdf"));
        assert_eq!(
            i.description.as_deref(),
            Some("Extract text from PDFs. Use for forms.\n")
        );
        assert_eq!(
            i.license.as_deref(),
            Some("Proprietary. LICENSE.txt has complete terms")
        );
        assert_eq!(
            i.compatibility.as_deref(),
            Some("Requires python3 and pypdf")
        );
        assert_eq!(i.metadata["version"], "1.0");
        assert_eq!(i.metadata["rev"], "3");
        assert_eq!(i.allowed_tools, ["Bash(python3:*)", "Read"]);
        assert_eq!(i.body, "# PDF\n\nUse scripts/extract.py.");
        assert_eq!(i.line_of("license"), 6);
        assert_eq!(i.line_of("allowed-tools"), 12);
        assert!(i.problems("pdf").is_empty(), "{:?}", i.problems("pdf"));
        assert!(i.unknown.is_empty());
    }

    #[test]
    fn each_rule_is_reported_at_its_line() {
        let p = problems("---\ndescription: d\nname: PDF_Tools\n---\n", "pdf-tools");
        assert_eq!(p[0].0, 3, "{p:?}");
        assert!(p[0].1.contains("lowercase"), "{p:?}");
        let p = problems("---\nname: pdf\ndescription: d\n---\n", "other");
        assert_eq!(p[0].0, 2);
        assert!(
            p[0].1.contains("does not match its folder `other`"),
            "{p:?}"
        );
        for bad in ["-pdf", "pdf-", "pd--f", &"a".repeat(65)] {
            assert!(name_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(name_problem("3d-print"), None);
        let p = problems("---\nname: pdf\n---\nbody", "pdf");
        assert!(p[0].1.contains("missing `description`"), "{p:?}");
        let long = "x".repeat(1025);
        let p = problems(
            &format!("---\nname: pdf\n\ndescription: {long}\n---\n"),
            "pdf",
        );
        assert_eq!(p[0].0, 4);
        assert!(p[0].1.contains("1025 characters"), "{p:?}");
        // Exactly 1,024 (in characters, not bytes) is fine.
        let ok = "é".repeat(1024);
        assert!(problems(&format!("---\nname: pdf\ndescription: {ok}\n---\n"), "pdf").is_empty());
        let p = problems(
            &format!(
                "---\nname: pdf\ndescription: d\ncompatibility: {}\n---\n",
                "c".repeat(501)
            ),
            "pdf",
        );
        assert_eq!(p[0].0, 4, "{p:?}");
        let p = problems(
            "---\nname: pdf\ndescription: d\nmetadata:\n  tags: [a, b]\n---\n",
            "pdf",
        );
        assert_eq!(p[0].0, 5, "{p:?}");
        assert!(p[0].1.contains("metadata.tags"), "{p:?}");
        let p = problems("---\nname: [pdf]\ndescription: d\n---\n", "pdf");
        assert!(
            p.iter().any(|(l, m)| *l == 2 && m.contains("must be text")),
            "{p:?}"
        );
    }

    #[test]
    fn malformed_files_say_what_and_where() {
        let p = problems("# no front matter\n", "x");
        assert_eq!(p[0].0, 1);
        assert!(p[0].1.contains("no front matter"), "{p:?}");
        let p = problems("---\nname: x\ndescription: d\n", "x");
        assert!(p[0].1.contains("not closed"), "{p:?}");
        let p = problems("---\nname: x\ndescription: [unclosed\n---\n", "x");
        assert!(p[0].1.contains("not valid YAML"), "{p:?}");
        // A tab as indentation is a YAML error, at its line.
        let p = problems(
            "---\nname: x\nmetadata:\n\tauthor: me\ndescription: d\n---\n",
            "x",
        );
        assert!(p[0].1.contains("not valid YAML"), "{p:?}");
        assert_eq!(p[0].0, 4, "{p:?}");
        let p = problems("---\nname: x\nname: y\ndescription: d\n---\n", "x");
        assert!(p[0].1.contains("twice") && p[0].0 == 3, "{p:?}");
        let p = problems("---\n- a\n- b\n---\n", "x");
        assert!(p[0].1.contains("must be a map"), "{p:?}");
        let p = problems("---\nname: &a x\ndescription: *a\n---\n", "x");
        assert!(p[0].1.contains("anchors"), "{p:?}");
        let deep = format!(
            "---\nname: x\ndescription: d\nmetadata: {}{}\n---\n",
            "[".repeat(50),
            "]".repeat(50)
        );
        let p = problems(&deep, "x");
        assert!(p[0].1.contains("nests deeper"), "{p:?}");
    }

    #[test]
    fn bom_and_crlf_are_read_and_unknown_keys_only_warn() {
        let text = "\u{feff}---\r\nname: x\r\ndescription: \"Does x.\"\r\nuser-invocable: false\r\n---\r\nBody.\r\n";
        let i = Instructions::parse(text).unwrap();
        assert_eq!(i.description.as_deref(), Some("Does x."));
        assert_eq!(i.body, "Body.");
        assert!(i.problems("x").is_empty(), "{:?}", i.problems("x"));
        assert_eq!(i.unknown.len(), 1);
        assert_eq!(i.unknown[0].line, 4);
        // `allowed-tools` as a YAML list means the same as the string.
        let i = Instructions::parse(
            "---\nname: x\ndescription: d\nallowed-tools:\n  - Bash\n  - Read\n---\n",
        )
        .unwrap();
        assert_eq!(i.allowed_tools, ["Bash", "Read"]);
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        // A deterministic mutation walk over a full front matter: every
        // byte dropped, doubled or replaced by YAML's special characters.
        let base = "---\nname: pdf\ndescription: \"Extract: text\"\nmetadata:\n  a: [1, {b: c}]\nallowed-tools: Bash Read\n---\nbody\n";
        let specials = [
            b'-', b':', b'[', b'{', b'"', b'\'', b'\t', b'\n', b'&', b'*', b'!', b'|', b'>', b'#',
            b'%',
        ];
        for i in 0..base.len() {
            let b = base.as_bytes();
            let mut variants = vec![
                [&b[..i], &b[i + 1..]].concat(),
                [&b[..=i], &b[i..]].concat(),
            ];
            for s in specials {
                variants.push([&b[..i], &[s][..], &b[i + 1..]].concat());
            }
            for v in variants {
                if let Ok(t) = std::str::from_utf8(&v)
                    && let Ok(parsed) = Instructions::parse(t)
                {
                    let _ = parsed.problems("pdf");
                }
            }
        }
    }

    #[test]
    fn every_builtin_skill_md_is_valid() {
        for b in super::super::builtin::SKILLS {
            let i =
                Instructions::parse(b.instructions).unwrap_or_else(|e| panic!("{}: {e:?}", b.name));
            assert_eq!(i.problems(b.name), vec![], "{}", b.name);
            assert!(!i.body.starts_with("---"), "{}", b.name);
        }
    }
}
