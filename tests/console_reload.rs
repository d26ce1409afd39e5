//! The console keeps watching what it was started with: a `--config` given
//! as a relative path is still watched (it used to have no folder to watch).

mod common;

use common::Ws;
use common::pty::keel_on_a_terminal;
use serde_json::json;

#[test]
fn a_relative_config_path_is_still_watched() {
    let ws = Ws::new().policy("[policy]\ndefault = \"deny\"\n");
    let out = keel_on_a_terminal(
        &ws,
        &["--config", "keel.toml"],
        json!([
            ["expect", "banner", "watching .*keel\\.toml"],
            [
                "write",
                "keel.toml",
                "[skills]\nbuiltin = false\n\n[policy]\ndefault = \"allow\"\n"
            ],
            [
                "expect",
                "config reload shown",
                r"\[config\] policy reloaded"
            ],
            ["send", "/quit\r"],
            ["exit"]
        ]),
    );
    assert!(out.contains("EXIT 0"), "{out}");
}
