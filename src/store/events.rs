//! The events of runs, as the gateway's event streams sent them.
//!
//! Each event has a number (`seq`, from 1, per run) that is its SSE `id:`,
//! so a client that reconnects with `Last-Event-ID` gets exactly what it
//! missed — from memory while the run is live, from here after it ended or
//! after keel restarted. Rows are append-only; a batch is written in one
//! transaction, so a crash leaves a prefix of the events, never a gap.

use rusqlite::params;

use super::{Store, StoreError, now_ms};

/// Most events one read returns (a reader continues after the last one).
pub const RUN_EVENTS_PAGE: usize = 10_000;

/// One stored run event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEventRecord {
    pub seq: u64,
    /// The SSE event name (`text`, `tool_call`, `done`, …).
    pub event: String,
    /// Its data: one JSON value.
    pub data: String,
}

impl Store {
    /// Appends events of a run (in one transaction). Numbers already
    /// stored are ignored, so writing a batch twice is harmless.
    pub fn append_run_events(
        &self,
        run_id: &str,
        events: &[RunEventRecord],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let at = now_ms();
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO run_events (run_id, seq, event, data, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for e in events {
                    st.execute(params![run_id, e.seq as i64, e.event, e.data, at])?;
                }
            }
            tx.commit()
        })
    }

    /// A run's events after `after` (0: from the start), oldest first, at
    /// most [`RUN_EVENTS_PAGE`].
    pub fn run_events(&self, run_id: &str, after: u64) -> Result<Vec<RunEventRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, event, data FROM run_events
                 WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            st.query_map(params![run_id, after as i64, RUN_EVENTS_PAGE as i64], |r| {
                Ok(RunEventRecord {
                    seq: r.get::<_, i64>(0)? as u64,
                    event: r.get(1)?,
                    data: r.get(2)?,
                })
            })?
            .collect()
        })
    }

    /// The highest event number stored for a run (0: none).
    pub fn last_run_event(&self, run_id: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = ?1",
                params![run_id],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, event: &str) -> RunEventRecord {
        RunEventRecord {
            seq,
            event: event.into(),
            data: "{}".into(),
        }
    }

    #[test]
    fn events_read_back_after_a_number_in_order_and_a_batch_twice_is_harmless() {
        let s = Store::in_memory().unwrap();
        s.append_run_events("r1", &[ev(1, "state"), ev(2, "text")])
            .unwrap();
        s.append_run_events("r1", &[ev(2, "text"), ev(3, "done")])
            .unwrap();
        s.append_run_events("r2", &[ev(1, "state")]).unwrap();
        let all: Vec<u64> = s
            .run_events("r1", 0)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(all, [1, 2, 3]);
        let after: Vec<String> = s
            .run_events("r1", 1)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(after, ["text", "done"]);
        assert_eq!(s.last_run_event("r1").unwrap(), 3);
        assert_eq!(s.last_run_event("nope").unwrap(), 0);
    }
}
