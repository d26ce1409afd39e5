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
