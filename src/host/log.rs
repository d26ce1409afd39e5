//! `keel.log`: messages into keel's log, tagged with skill and tool.

use serde::Deserialize;
use serde_json::Value;

use super::{Args, CallCtx, HostError, HostFn, opt, p};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogArgs<'a> {
    message: &'a str,
    fields: Option<Value>,
}

macro_rules! level_fn {
    ($name:ident, $macro:ident, $doc:literal) => {
        fn $name(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
            let LogArgs { message: msg, fields } = args.parse()?;
            let fields = fields.map(|v| v.to_string()).unwrap_or_default();
            tracing::$macro!(skill = %ctx.skill.name, tool = %ctx.tool, fields = %fields, "{msg}");
            Ok(Value::Null)
        }
    };
}

level_fn!(debug, debug, "debug");
level_fn!(info, info, "info");
level_fn!(warn, warn, "warn");
level_fn!(error, error, "error");

const PARAMS: &[super::Param] = &[p("message", "string"), opt("fields", "table")];

pub const FUNCTIONS: &[HostFn] = &[
    HostFn {
        namespace: "log",
        name: "debug",
        params: PARAMS,
        returns: "nil",
        capability: None,
        doc: "Logs at debug level, with optional structured fields.",
        luau_example: r#"keel.log.debug("parsed", { n = 3 })"#,
        rhai_example: r#"keel::log::debug("parsed", #{ n: 3 });"#,
        call: debug,
    },
    HostFn {
        namespace: "log",
        name: "info",
        params: PARAMS,
        returns: "nil",
        capability: None,
        doc: "Logs at info level.",
        luau_example: r#"keel.log.info("note added")"#,
        rhai_example: r#"keel::log::info("note added");"#,
        call: info,
    },
    HostFn {
        namespace: "log",
        name: "warn",
        params: PARAMS,
        returns: "nil",
        capability: None,
        doc: "Logs at warn level.",
        luau_example: r#"keel.log.warn("slow response")"#,
        rhai_example: r#"keel::log::warn("slow response");"#,
        call: warn,
    },
    HostFn {
        namespace: "log",
        name: "error",
        params: PARAMS,
        returns: "nil",
        capability: None,
        doc: "Logs at error level (the call goes on; raise an error to fail it).",
        luau_example: r#"keel.log.error("could not parse", { line = 3 })"#,
        rhai_example: r#"keel::log::error("could not parse", #{ line: 3 });"#,
        call: error,
    },
];
