//! `keel.json`: encode and decode JSON text. No capability: pure functions.

use serde::Deserialize;
use serde_json::Value;

use super::{Args, CallCtx, HostError, HostFn, opt, p};

/// Largest text `json.decode` accepts.
pub const MAX_DECODE: usize = 16 * 1024 * 1024;

pub const FUNCTIONS: &[HostFn] = &[
    HostFn {
        namespace: "json",
        name: "encode",
        params: &[p("value", "any"), opt("pretty", "boolean")],
        returns: "string",
        capability: None,
        doc: "Turns a value into JSON text; `pretty = true` indents it. An empty table encodes as `{}` (an object).",
        luau_example: r#"local s = keel.json.encode({ ok = true })"#,
        rhai_example: r#"let s = keel::json::encode(#{ ok: true });"#,
        call: encode,
    },
    HostFn {
        namespace: "json",
        name: "decode",
        params: &[p("text", "string")],
        returns: "any",
        capability: None,
        doc: "Parses JSON text (at most 16 MiB). JSON null becomes nil (Rhai: `()`).",
        luau_example: r#"local v = keel.json.decode('{"a": 1}')"#,
        rhai_example: r#"let v = keel::json::decode("{\"a\": 1}");"#,
        call: decode,
    },
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncodeArgs {
    value: Value,
    pretty: Option<bool>,
}

fn encode(_ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let EncodeArgs { value: v, pretty } = args.parse()?;
    let text = if pretty == Some(true) {
        serde_json::to_string_pretty(&v)
    } else {
        serde_json::to_string(&v)
    };
    text.map(Value::String)
        .map_err(|e| HostError::BadArgument(format!("json.encode: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecodeArgs<'a> {
    text: &'a str,
}

fn decode(_ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let DecodeArgs { text } = args.parse()?;
    if text.len() > MAX_DECODE {
        return Err(HostError::BadArgument(format!(
            "json.decode: text is {} bytes; the limit is {MAX_DECODE}",
            text.len()
        )));
    }
    serde_json::from_str(text).map_err(|e| HostError::BadArgument(format!("json.decode: {e}")))
}
