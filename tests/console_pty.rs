//! The console on a real pseudo-terminal, typed at as a person would:
//! Tab completion, a tool call, and a reload shown while the prompt waits.
//!
//! Python's `pty` module drives it (see `common::pty`).

mod common;

use common::Ws;
use common::pty::{keel_on_a_terminal, keel_on_a_terminal_with_env};
use serde_json::json;

#[test]
fn the_console_completes_calls_and_shows_reloads_as_they_happen() {
    let ws = Ws::new()
        .skill(
            "greet",
            "[skill]\nname = \"greet\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[[tools]]\nname = \"hi\"\ndescription = \"says hi\"\n",
            &[("main.luau", "local M = {} function M.hi() return 'one' end return M\n")],
        )
        .policy("");
    let out = keel_on_a_terminal(
        &ws,
        &[],
        json!([
            ["expect", "banner", "1 skill, 1 tool"],
            ["send", "/call gr"],
            ["send", "\t"],
            ["expect", "completion", "says hi"],
            ["send", "\r"],
            ["send", "\r"],
            ["expect", "call", "\"one\""],
            [
                "write",
                "skills/greet/main.luau",
                "local M = {} function M.hi() return 'two' end return M\n"
            ],
            [
                "expect",
                "reload shown while waiting",
                r"\[reload\] reloaded greet@1\.0\.0"
            ],
            ["send", "/call greet.hi\r"],
            ["expect", "new version", "\"two\""],
            ["send", "/quit\r"],
            ["exit"]
        ]),
    );
    assert!(
        out.contains("EXIT 0"),
        "the console did not quit cleanly:\n{out}"
    );
}

/// A person at the console is asked when the policy says `ask` for a
/// `/call` (before, the call was denied "because nobody can answer"), and
/// Ctrl-C during a `/call` stops the call and stays in the console
/// (before, it ended the console with 130).
#[test]
fn a_console_call_asks_the_person_and_ctrl_c_stops_it_but_not_the_console() {
    let ws = Ws::new()
        .skill(
            "spin",
            "[skill]\nname = \"spin\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[capabilities]\nkv = true\n[[tools]]\nname = \"save\"\ndescription = \"saves\"\n[[tools]]\nname = \"forever\"\ndescription = \"spins\"\n",
            &[(
                "main.luau",
                "local M = {}\nfunction M.save() keel.kv.set('k', 1) return 'saved' end\nfunction M.forever() while true do end end\nreturn M\n",
            )],
        )
        .policy("[policy]\nask = [\"kv\"]\n\n[limits]\ntimeout_ms = 600000\nmax_operations = 1000000000000000\n");
    let out = keel_on_a_terminal(
        &ws,
        &[],
        json!([
            ["expect", "banner", "1 skill, 2 tools"],
            ["send", "/call spin.save\r"],
            ["expect", "the question", "spin wants `kv`"],
            [
                "expect",
                "the prompt",
                r"allow\? \[y\]es / \[n\]o / \[a\]lways"
            ],
            ["send", "y\r"],
            ["expect", "approved and run", "\"saved\""],
            ["send", "/call spin.forever\r"],
            ["send", "\u{3}"],
            ["expect", "stopped", "cancelled"],
            ["send", "/call spin.save\r"],
            ["expect", "asked again", "spin wants `kv`"],
            ["send", "n\r"],
            ["expect", "denied", "the request was denied"],
            ["send", "/quit\r"],
            ["exit"]
        ]),
    );
    assert!(out.contains("EXIT 0"), "the console did not stay:\n{out}");
    let audit = ws.run(&["audit", "--json", "--limit", "0"]);
    assert!(
        audit.stdout.contains("ask:approved") && audit.stdout.contains("ask:denied"),
        "{}",
        audit.stdout
    );
}

/// On a terminal `keel check` colours its status words; in a pipe (every
/// other test) the same text comes without colour codes.
#[test]
fn check_colours_status_words_on_a_terminal_only() {
    let ws = Ws::new()
        .skill(
            "greet",
            "[skill]\nname = \"greet\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[capabilities]\nkv = true\n[[tools]]\nname = \"hi\"\ndescription = \"says hi\"\n",
            &[("main.luau", "local M = {} function M.hi() return 'one' end return M\n")],
        )
        .policy("[policy]\ndeny = [\"kv\"]\n");
    let out = keel_on_a_terminal(
        &ws,
        &["check", "skills/greet"],
        json!([
            [
                "expect",
                "green ok",
                "\u{1b}\\[32mok\u{1b}\\[0m greet@1\\.0\\.0"
            ],
            ["expect", "red DENY", "\u{1b}\\[31mDENY\u{1b}\\[0m"],
            ["exit"]
        ]),
    );
    assert!(out.contains("EXIT 0"), "{out}");
    let piped = ws.run(&["check", "skills/greet"]);
    assert!(
        piped.stdout.starts_with("ok greet@1.0.0") && !piped.stdout.contains('\u{1b}'),
        "{}",
        piped.stdout
    );
}

/// The console's listings colour their status words on a terminal — the
/// `ok` and `DENY` of `/check`, the `FAILED` of `/skills`, the decision of
/// `/audit` — and none with `NO_COLOR` set or fed from a pipe. The words
/// are marked where they are produced: a skill named like a status word
/// is not coloured.
#[test]
fn console_listings_are_coloured_on_a_terminal_but_not_with_no_color_or_in_a_pipe() {
    let ws = Ws::new()
        .skill(
            "greet",
            "[skill]\nname = \"greet\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[capabilities]\nkv = true\n[[tools]]\nname = \"hi\"\ndescription = \"says hi\"\n",
            &[(
                "main.luau",
                "local M = {} function M.hi() keel.kv.set('k', 1) return 'one' end return M\n",
            )],
        )
        .skill(
            "broken",
            "[skill]\nname = \"broken\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[[tools]]\nname = \"go\"\ndescription = \"never\"\n",
            &[("main.luau", "local M = {\n")],
        )
        .file(
            "skills/ok/SKILL.md",
            "---\nname: ok\ndescription: A skill named like a status word.\n---\nBody.\n",
        )
        .policy("[policy]\ndeny = [\"kv\"]\n");
    let steps = |coloured: bool| {
        // With colour, the word sits between colour codes; without, it
        // follows the line start (or a space) directly.
        let (ok, deny, failed, audit_deny) = if coloured {
            (
                "\u{1b}\\[32mok\u{1b}\\[0m greet@1\\.0\\.0",
                "\u{1b}\\[31mDENY\u{1b}\\[0m \\(",
                "\u{1b}\\[31mFAILED\u{1b}\\[0m broken",
                "Z \u{1b}\\[31mdeny\u{1b}\\[0m  greet@1\\.0\\.0",
            )
        } else {
            (
                "[\r\n]ok greet@1\\.0\\.0",
                " DENY \\(",
                "[\r\n]FAILED broken",
                "Z deny  greet@1\\.0\\.0",
            )
        };
        json!([
            ["expect", "banner", "Type /help"],
            ["send", "/check\r"],
            ["expect", "ok", ok],
            ["expect", "DENY", deny],
            ["send", "/skills\r"],
            // The skill named `ok` is listed plainly either way.
            [
                "expect",
                "a skill named ok is not a status",
                "[\r\n]ok {10,}md "
            ],
            ["expect", "FAILED", failed],
            ["send", "/call greet.hi\r"],
            ["expect", "denied", "denied"],
            ["send", "/audit 1\r"],
            ["expect", "audit decision", audit_deny],
            ["send", "/quit\r"],
            ["exit"]
        ])
    };
    let out = keel_on_a_terminal_with_env(&ws, &[], &[], steps(true));
    assert!(out.contains("EXIT 0"), "{out}");
    let out = keel_on_a_terminal_with_env(&ws, &[("NO_COLOR", "1")], &[], steps(false));
    assert!(out.contains("EXIT 0"), "{out}");

    // Fed from a pipe: the same listings, no colour code anywhere, and
    // the failed `/check` and `/call` make the exit status 1.
    let mut child = ws
        .keel()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn console");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin"),
        b"/check\n/skills\n/call greet.hi\n/audit 1\n",
    )
    .expect("write");
    let piped = child.wait_with_output().expect("console exits");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&piped.stdout),
        String::from_utf8_lossy(&piped.stderr),
    );
    assert_eq!(piped.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("\nok greet@1.0.0") && stdout.contains("\nFAILED broken"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "{stdout}{stderr}"
    );
}
