//! `keel.time`: the clock and sleeping. No capability.
//!
//! `sleep` never outlasts the call's deadline: asked to sleep past it, it
//! sleeps until the deadline and the call ends there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Args, CallCtx, HostError, HostFn, p};

pub const FUNCTIONS: &[HostFn] = &[
    HostFn {
        namespace: "time",
        name: "now",
        params: &[],
        returns: "number",
        capability: None,
        doc: "Seconds since the Unix epoch, with a fractional part.",
        luau_example: r#"local t = keel.time.now()"#,
        rhai_example: r#"let t = keel::time::now();"#,
        call: now,
    },
    HostFn {
        namespace: "time",
        name: "sleep",
        params: &[p("ms", "number")],
        returns: "nil",
        capability: None,
        doc: "Waits a number of milliseconds (bounded by the call's deadline).",
        luau_example: r#"keel.time.sleep(250)"#,
        rhai_example: r#"keel::time::sleep(250);"#,
        call: sleep,
    },
];

fn now(_ctx: &CallCtx, _args: Args) -> Result<Value, HostError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Ok(json!(secs))
}

fn sleep(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let ms = args.number(0)?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(HostError::BadArgument(format!(
            "time.sleep: {ms} is not a number of milliseconds >= 0"
        )));
    }
    let want = Duration::from_secs_f64(ms / 1000.0);
    let left = ctx.remaining()?;
    if want >= left {
        std::thread::sleep(left);
        return Err(HostError::Deadline);
    }
    std::thread::sleep(want);
    Ok(Value::Null)
}
