//! The engines' last doors: bytecode, memory, waits that must end, and
//! `tools.call` chains that cannot be served.

mod common;

use common::Ws;
use serde_json::json;

const BYTECODE_MANIFEST: &str = r#"
[skill]
name = "bc"
version = "1.0.0"
description = "ships bytecode"
entry = "main.luau"
[[tools]]
name = "hi"
description = "would answer"
"#;

/// Real Luau bytecode (compiled by Luau 0.7 from
/// `local M = {} function M.hi() return 'bytecode ran' end return M`):
/// version byte 9 (a tab!), types version 3. Every byte is ASCII, so it
/// reads as a valid UTF-8 "script".
const LUAU_BYTECODE: &[u8] = &[
    9, 3, 2, 12, 98, 121, 116, 101, 99, 111, 100, 101, 32, 114, 97, 110, 2, 104, 105, 0, 2, 1, 0,
    0, 0, 0, 0, 2, 5, 0, 0, 0, 22, 0, 2, 0, 1, 3, 1, 0, 1, 2, 1, 24, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0,
    1, 2, 0, 7, 65, 0, 0, 0, 53, 0, 1, 0, 0, 0, 0, 0, 64, 1, 0, 0, 16, 1, 0, 89, 1, 0, 0, 0, 22, 0,
    2, 0, 2, 6, 0, 3, 2, 1, 0, 1, 0, 1, 24, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1,
];

#[test]
fn luau_bytecode_in_a_skill_file_is_refused() {
    let ws = Ws::new()
        .skill("bc", BYTECODE_MANIFEST, &[("main.luau", "return {}")])
        .policy("");
    let src = std::str::from_utf8(LUAU_BYTECODE).expect("ASCII bytecode");
    ws.write("skills/bc/main.luau", src);
    ws.call("bc.hi", json!({}))
        .err_contains(&["main.luau", "bytecode", "Luau source"]);
}

#[test]
fn bytecode_reached_through_require_is_refused() {
    let ws = Ws::new()
        .skill(
            "bc",
            BYTECODE_MANIFEST,
            &[(
                "main.luau",
                "local M = {}\nfunction M.hi() return require('./evil') end\nreturn M\n",
            )],
        )
        .policy("");
    ws.write(
        "skills/bc/evil.luau",
        std::str::from_utf8(LUAU_BYTECODE).expect("ASCII bytecode"),
    );
    ws.call("bc.hi", json!({}))
        .err_contains(&["evil.luau", "bytecode"]);
}

#[test]
fn a_file_starting_with_the_lua_signature_byte_is_refused() {
    let ws = Ws::new()
        .skill("bc", BYTECODE_MANIFEST, &[("main.luau", "return {}")])
        .policy("");
    ws.write("skills/bc/main.luau", "\x1bLua\u{0}local M = {} return M");
    ws.call("bc.hi", json!({}))
        .err_contains(&["main.luau", "bytecode"]);
}
