//! `keel audit` and `/audit`: the audit log, newest first.

use std::fmt::Write;

use super::{CommandError, Ctx, Render, Text};
use crate::store::AuditRecord;
use crate::text::escape_control as esc;

/// Entries shown when no limit is given (`keel audit`, `/audit`).
pub const DEFAULT_LIMIT: usize = 50;

/// The newest audit entries.
pub struct Audit(pub Vec<AuditRecord>);

/// The newest `limit` entries; 0 means all of them.
pub fn run(ctx: Ctx<'_>, limit: usize) -> Result<Audit, CommandError> {
    Ok(Audit(ctx.kernel.store().audit_log(limit)?))
}

impl Render for Audit {
    fn text(&self) -> Text {
        if self.0.is_empty() {
            return "the audit log is empty\n".into();
        }
        let mut s = Text::new();
        for r in &self.0 {
            let _ = write!(s, "{} ", format_time(r.at_ms));
            s.status_padded(super::decision_tone(&r.decision), &r.decision, 5);
            let _ = writeln!(
                s,
                " {}@{} {} {} {} — {}",
                esc(&r.skill),
                esc(&r.version),
                esc(&r.tool),
                esc(&r.capability),
                esc(&r.target),
                esc(&r.reason)
            );
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&self.0)
    }
}

/// `2026-11-23T01:50:25Z` from milliseconds since the epoch (UTC).
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_render_in_utc() {
        assert_eq!(super::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::format_time(1_795_399_624_711),
            "2026-11-23T02:07:04Z"
        );
        assert_eq!(super::format_time(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
