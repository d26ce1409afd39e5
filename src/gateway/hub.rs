//! `GET /v1/events`: one stream of what an operator watches.
//!
//! Events are kept in a ring of the latest [`HUB_KEEP`] in memory, each
//! with an id `BOOT-SEQ` (`BOOT` is random per start), so a client that
//! reconnects with `Last-Event-ID` gets what it missed while it was away;
//! after a restart (another `BOOT`) or a gap longer than the ring, it gets
//! the whole ring, as a new client (no `Last-Event-ID`) does. These events describe the live process; what must
//! survive a restart (runs, approvals, skills' state) is in the store and
//! the other routes.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::watch;

/// Events kept for clients that reconnect.
pub const HUB_KEEP: usize = 1024;

/// One operator event.
#[derive(Debug, Clone)]
pub struct HubEvent {
    pub seq: u64,
    pub name: &'static str,
    pub data: String,
}

pub struct Hub {
    boot: String,
    ring: Mutex<VecDeque<HubEvent>>,
    latest: watch::Sender<u64>,
}

impl Hub {
    pub fn new(boot: String) -> Self {
        Self {
            boot,
            ring: Mutex::new(VecDeque::with_capacity(64)),
            latest: watch::channel(0).0,
        }
    }

    pub fn publish(&self, name: &'static str, data: Value) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let seq = ring.back().map_or(1, |e| e.seq + 1);
        if ring.len() == HUB_KEEP {
            ring.pop_front();
        }
        ring.push_back(HubEvent {
            seq,
            name,
            data: data.to_string(),
        });
        drop(ring);
        self.latest.send_replace(seq);
    }

    /// The SSE id of an event.
    pub fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.boot)
    }

    /// Where a client resumes: right after the event its `Last-Event-ID`
    /// names, if that is an event of this start; else (a new client, or
    /// one that saw an earlier start) from the oldest event kept, so a
    /// page opened now still shows what just happened.
    pub fn resume_after(&self, last_event_id: Option<&str>) -> u64 {
        let Some((boot, seq)) = last_event_id.and_then(|id| id.rsplit_once('-')) else {
            return 0;
        };
        if boot != self.boot {
            return 0;
        }
        seq.parse().unwrap_or(0)
    }

    /// The first event after `cursor`, if there is one yet.
    pub fn next_after(&self, cursor: u64) -> Option<HubEvent> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let first = ring.front()?.seq;
        let i = cursor.saturating_sub(first - 1) as usize;
        ring.get(i).cloned()
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_gets_what_was_missed_and_a_foreign_id_gets_everything_kept() {
        let hub = Hub::new("b1".into());
        for i in 0..(HUB_KEEP + 10) {
            hub.publish("run.started", serde_json::json!({"i": i}));
        }
        // The oldest 10 fell out of the ring.
        let first = hub.next_after(0).unwrap();
        assert_eq!(first.seq, 11);
        let after = hub.resume_after(Some(&hub.id(500)));
        assert_eq!(hub.next_after(after).unwrap().seq, 501);
        assert_eq!(hub.resume_after(Some("other-500")), 0);
        assert_eq!(hub.resume_after(Some("garbage")), 0);
        // A new client gets everything kept.
        assert_eq!(hub.resume_after(None), 0);
        assert!(hub.next_after((HUB_KEEP + 10) as u64).is_none());
    }
}
