//! Server-sent events, parsed incrementally from the bytes as they arrive.
//!
//! Follows the WHATWG event-stream format: lines end in `\n`, `\r\n` or
//! `\r`; `event:` names the event, `data:` lines accumulate (joined with
//! `\n`), a line starting with `:` is a comment, a blank line dispatches.
//! Chunks may split anywhere — inside a line, inside a UTF-8 character — so
//! bytes are buffered until a line is complete. Bounded: a single line over
//! the parser's limit ([`MAX_LINE`] unless set) is an error, never grown
//! without limit and never silently dropped (a dropped line could be the
//! one that carried the end of the answer).
//!
//! The parser also counts the bytes that are not comments
//! ([`SseParser::progress`]): a server that sends only keep-alive comments
//! (`: ping`) is alive but not answering, and the caller's idle timeout
//! must not be reset by them.

/// Default longest line, in bytes.
pub const MAX_LINE: usize = 1024 * 1024;

/// A line longer than the parser's limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a single stream line is over {limit} bytes")]
pub struct LineTooLong {
    pub limit: usize,
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (Anthropic names its events; OpenAI does not).
    pub event: Option<String>,
    pub data: String,
}

/// Incremental parser state.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous byte was `\r`, so a following `\n` ends nothing new.
    after_cr: bool,
    max_line: usize,
    /// Bytes of lines that are not comments.
    progress: u64,
    event: Option<String>,
    data: Option<String>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_max_line(MAX_LINE)
    }
}

impl SseParser {
    /// A parser that refuses lines longer than `max_line` bytes.
    pub fn with_max_line(max_line: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            max_line,
            progress: 0,
            event: None,
            data: None,
        }
    }

    /// Feeds bytes; returns the events they completed, or an error when a
    /// line grows over the limit (the stream cannot be trusted after that).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(e) = self.line_done(&line) {
                        out.push(e);
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= self.max_line {
                        return Err(LineTooLong {
                            limit: self.max_line,
                        });
                    }
                    // A comment line (first byte `:`) is not progress.
                    if self.line.first() != Some(&b':') && !(self.line.is_empty() && b == b':') {
                        self.progress += 1;
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    /// Bytes received so far that were not part of comment lines (nor line
    /// ends): what an idle timeout should count as the server answering.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// Ends the stream: a final event without its blank line still counts.
    pub fn finish(mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty()
            && let Some(e) = self.line_done(&line)
        {
            out.push(e);
        }
        if let Some(e) = self.line_done(b"") {
            out.push(e);
        }
        out
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| SseEvent { event, data });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(text: &str, size: usize) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(size) {
            out.extend(p.push(chunk).unwrap());
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn events_survive_any_chunking() {
        let text = "event: message_start\r\ndata: {\"a\": \"é\"}\r\n\r\n: ping comment\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let want = vec![
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"a\": \"é\"}".into(),
            },
            SseEvent {
                event: None,
                data: "line1\nline2".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ];
        for size in 1..text.len() {
            assert_eq!(parse_in_chunks(text, size), want, "chunk size {size}");
        }
    }

    #[test]
    fn a_final_event_without_a_blank_line_is_kept() {
        assert_eq!(
            parse_in_chunks("data: tail", 3),
            vec![SseEvent {
                event: None,
                data: "tail".into()
            }]
        );
    }

    #[test]
    fn an_overlong_line_is_an_error_not_dropped_or_grown() {
        let mut p = SseParser::with_max_line(64);
        let mut input = b"data: ok\n\ndata: ".to_vec();
        input.extend(vec![b'x'; 100]);
        assert_eq!(p.push(&input), Err(LineTooLong { limit: 64 }));
        // Exactly at the limit is fine.
        let mut p = SseParser::with_max_line(64);
        let mut line = b"data: ".to_vec();
        line.extend(vec![b'x'; 58]);
        line.extend(b"\n\n");
        assert_eq!(p.push(&line).unwrap().len(), 1);
    }

    #[test]
    fn keep_alive_comments_are_not_progress() {
        let mut p = SseParser::default();
        p.push(b": ping\n\n:\n\n: keep-alive\r\n").unwrap();
        assert_eq!(p.progress(), 0);
        // Split inside a comment: still not progress.
        p.push(b":").unwrap();
        p.push(b" more\n").unwrap();
        assert_eq!(p.progress(), 0);
        p.push(b"data: x\n\n").unwrap();
        assert_eq!(p.progress(), "data: x".len() as u64);
    }
}
