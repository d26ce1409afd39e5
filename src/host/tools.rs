//! `keel.tools`: calling another tool.
//!
//! The callee runs as a tool, under *its own* skill's grants; the caller needs
//! `tools.call` for the callee's name. No route lends one skill's grants to
//! another: the callee's effects are judged against the callee.

use serde::Deserialize;
use serde_json::Value;

use super::{Args, CallCtx, HostError, HostFn, opt, p};
use crate::capability::{CapabilityKind, Target};
use crate::script::LimitKind;
use crate::tool::ToolError;

pub const FUNCTIONS: &[HostFn] = &[HostFn {
    namespace: "tools",
    name: "call",
    params: &[p("name", "string"), opt("args", "table")],
    returns: "any",
    capability: Some(CapabilityKind::ToolsCall),
    doc: "Calls a tool by its full name (`skill.tool`) and returns its result. Needs `tools.call` for that name.",
    luau_example: r#"local r = keel.tools.call("notes.add", { text = "hi" })"#,
    rhai_example: r#"let r = keel::tools::call("notes.add", #{ text: "hi" });"#,
    call,
}];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallArgs<'a> {
    name: &'a str,
    /// The callee's arguments: any shape; its schema checks them.
    args: Option<Value>,
}

fn call(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let CallArgs {
        name,
        args: tool_args,
    } = args.parse()?;
    let tool_args = match tool_args {
        None => Value::Object(Default::default()),
        // An empty Luau table arrives as an empty array.
        Some(Value::Array(a)) if a.is_empty() => Value::Object(Default::default()),
        Some(v) => v,
    };
    ctx.check(CapabilityKind::ToolsCall, Target::Name(name))?;
    match ctx.kernel.call_tool_blocking(name, tool_args, Some(ctx)) {
        Ok(v) => Ok(v),
        // The callee ran out of the caller's own time, or the run was
        // cancelled under it: the caller ends too (the engine tells the
        // two apart by the context).
        Err(ToolError::Script {
            error:
                crate::script::ScriptError::Limit {
                    kind: LimitKind::Deadline | LimitKind::Cancelled,
                    ..
                },
            ..
        }) if ctx.remaining().is_err() => Err(HostError::Deadline),
        Err(e) => Err(HostError::Failed(format!("tools.call: {e}"))),
    }
}
