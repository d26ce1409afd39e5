//! The console on a real pseudo-terminal, typed at as a person would:
//! Tab completion, a tool call, and a reload shown while the prompt waits.
//!
//! Python's `pty` module drives it (see `common::pty`).

mod common;

use common::Ws;
use common::pty::keel_on_a_terminal;
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
