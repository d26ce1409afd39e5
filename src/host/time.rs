//! `keel.time`: the clock and sleeping. No capability.
//!
//! `sleep` never outlasts the call's deadline: asked to sleep past it, it
//! sleeps until the deadline and the call ends there. It also ends within
//! one slice ([`SLEEP_SLICE`]) of the run being cancelled or of the
//! deadline moving: it sleeps in short slices and looks at both between
//! them, since a plain `thread::sleep` cannot be woken.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
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

/// Longest single wait inside `sleep`: how late a cancellation may be seen.
pub const SLEEP_SLICE: Duration = Duration::from_millis(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    ms: f64,
}

fn sleep(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let SleepArgs { ms } = args.parse()?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(HostError::BadArgument(format!(
            "time.sleep: {ms} is not a number of milliseconds >= 0"
        )));
    }
    // `from_secs_f64` panics past ~584 years; nobody sleeps that long, but
    // a script may ask.
    let want = Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX);
    let until = Instant::now().checked_add(want);
    loop {
        // `remaining` fails once the run is cancelled or the (possibly
        // moved) deadline passed: the call ends there.
        let left = ctx.remaining()?;
        let now = Instant::now();
        let to_go = match until {
            Some(u) if u <= now => return Ok(Value::Null),
            Some(u) => u - now,
            None => Duration::MAX,
        };
        std::thread::sleep(to_go.min(left).min(SLEEP_SLICE));
    }
}
