//! Store figures: write latency from async code (through the store
//! thread), alone and while another connection — standing in for another
//! keel process on the same data directory — writes as fast as it can;
//! and what opening a large database costs (the `quick_check` at open).
//!
//! `cargo bench --bench store`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel::store::{AuditEntry, NewMessage, Store};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `n` appends of one message, awaited one after another from `tasks`
/// concurrent tasks on a two-worker runtime; returns every latency.
fn async_writes(store: &Arc<Store>, session: &str, tasks: usize, n: usize) -> Vec<Duration> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let store = store.clone();
                let session = session.to_string();
                tokio::spawn(async move {
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        let session = session.clone();
                        let t = Instant::now();
                        store
                            .call(move |s| {
                                s.add_messages(&[NewMessage {
                                    session_id: &session,
                                    kind: keel::store::MessageKind::Assistant,
                                    content: "a line of an answer",
                                    ..Default::default()
                                }])
                            })
                            .await
                            .expect("write");
                        out.push(t.elapsed());
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.expect("task"));
        }
        all
    })
}

fn report(what: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{what:<58} n={:<5} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        lat.len(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().expect("some"))
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path()).expect("open"));
    let session = store.create_session("bench").expect("session").id;

    report(
        "async write, one task",
        async_writes(&store, &session, 1, 2000),
    );
    report(
        "async write, 8 tasks at once",
        async_writes(&store, &session, 8, 250),
    );

    // Another process's connection writing flat out.
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (path, stop, session) = (dir.path().to_path_buf(), stop.clone(), session.clone());
        std::thread::spawn(move || {
            let s = Store::open(&path).expect("open");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                s.add_messages(&[NewMessage {
                    session_id: &session,
                    kind: keel::store::MessageKind::Assistant,
                    content: "from elsewhere",
                    ..Default::default()
                }])
                .expect("other write");
                n += 1;
            }
            n
        })
    };
    report(
        "async write, one task, another process writing flat out",
        async_writes(&store, &session, 1, 2000),
    );
    stop.store(true, Ordering::Relaxed);
    let others = other.join().expect("other");
    println!("  (the other connection wrote {others} messages meanwhile, none failed)");

    // Opening a big database: the quick_check at open reads every page.
    let big = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(big.path()).expect("open");
        let e = AuditEntry {
            skill: "notes",
            version: "1.0.0",
            tool: "notes.add",
            capability: "kv",
            target: "some/target/path",
            decision: "allow",
            reason: "granted by the policy",
        };
        for _ in 0..200_000 {
            s.audit(&e).expect("audit");
        }
    }
    let size = std::fs::metadata(big.path().join("keel.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(big.path().join("keel.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    let mut opens = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        drop(Store::open(big.path()).expect("open"));
        opens.push(t.elapsed());
    }
    report(
        &format!(
            "open (with quick_check), {:.0} MB database",
            size as f64 / 1e6
        ),
        opens,
    );
}
