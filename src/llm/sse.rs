//! Server-sent events, parsed incrementally from the bytes as they arrive.
//!
//! Follows the WHATWG event-stream format: lines end in `\n`, `\r\n` or
//! `\r`; `event:` names the event, `data:` lines accumulate (joined with
//! `\n`), a line starting with `:` is a comment, a blank line dispatches.
//! Chunks may split anywhere — inside a line, inside a UTF-8 character — so
//! bytes are buffered until a line is complete. Bounded: a single line over
//! [`MAX_LINE`] bytes is dropped rather than grown without limit.

/// Longest line kept, in bytes.
pub const MAX_LINE: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (Anthropic names its events; OpenAI does not).
    pub event: Option<String>,
    pub data: String,
}

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous byte was `\r`, so a following `\n` ends nothing new.
    after_cr: bool,
    overlong: bool,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    let overlong = std::mem::take(&mut self.overlong);
                    if !overlong && let Some(e) = self.line_done(&line) {
                        out.push(e);
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() < MAX_LINE {
                        self.line.push(b);
                    } else {
                        self.overlong = true;
                    }
                }
            }
        }
        out
    }

    /// Ends the stream: a final event without its blank line still counts.
    pub fn finish(mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty()
            && !self.overlong
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
            out.extend(p.push(chunk));
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
    fn overlong_lines_are_dropped_not_grown() {
        let mut p = SseParser::default();
        let big = vec![b'x'; MAX_LINE + 10];
        let mut input = b"data: ".to_vec();
        input.extend(&big);
        input.extend(b"\n\ndata: ok\n\n");
        let events = p.push(&input);
        assert_eq!(
            events,
            vec![SseEvent {
                event: None,
                data: "ok".into()
            }]
        );
    }
}
