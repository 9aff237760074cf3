//! The replica's rules without NATS: ordering, syncs, incarnations, expiry, pushes.

use std::time::Duration;

use futures_util::FutureExt;
use prometheus_client::registry::Registry;
use rollcall_core::presence::ClientInfo;
use serde_json::Value;

use super::*;
use crate::hub::Subscriber;
use crate::outbox::{Next, Outbox, OutboxReceiver};

const CH: &str = "chat:1";
const TIMEOUT: Duration = Duration::from_secs(3);

struct Fixture {
    replica: Replica,
    index: Arc<Index>,
    rx: OutboxReceiver,
    now: Instant,
}

fn fixture() -> Fixture {
    let hub = Hub::new();
    let (outbox, rx) = Outbox::new(1 << 24);
    hub.subscribe(
        &CH.into(),
        &"watcher".into(),
        Subscriber {
            outbox,
            push_join_leave: true,
        },
    );
    let index = Arc::new(Index::default());
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let me = Origin {
        node: "me",
        incarnation: "me-1",
    };
    Fixture {
        replica: Replica::new(me, TIMEOUT, index.clone(), hub, metrics),
        index,
        rx,
        now: Instant::now(),
    }
}

impl Fixture {
    /// Pushes queued so far, as `("join"|"leave", client)`.
    fn pushes(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(Next::Frame(frame)) = self.rx.next().now_or_never() {
            for line in frame.split(|b| *b == b'\n') {
                let v: Value = serde_json::from_slice(line).unwrap();
                let push = &v["push"];
                for kind in ["join", "leave"] {
                    if let Some(info) = push.get(kind) {
                        out.push((
                            kind.to_string(),
                            info["info"]["client"].as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
        out
    }

    fn members(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .index
            .presence(CH)
            .into_iter()
            .map(|i| i.client.to_string())
            .collect();
        m.sort();
        m
    }
}

fn origin(inc: &str) -> Origin<'_> {
    Origin {
        node: "a",
        incarnation: inc,
    }
}

fn record(client: &str, presence: bool, join_leave: bool) -> (Key, Record) {
    (
        (CH.into(), client.into()),
        Record {
            info: ClientInfo {
                client: client.into(),
                user: "u".into(),
                conn_info: None,
                chan_info: None,
            },
            presence,
            join_leave,
        },
    )
}

fn join(client: &str) -> Update {
    let (k, r) = record(client, true, true);
    Update::Join(k, r)
}

fn leave(client: &str) -> Update {
    Update::Leave((CH.into(), client.into()))
}

fn delta(first_seq: u64, changes: Vec<Update>) -> ValidDelta {
    ValidDelta {
        first_seq,
        origin_time_us: now_us(),
        changes,
    }
}

fn snapshot(seq: u64, clients: &[&str]) -> Snapshot {
    Snapshot {
        seq,
        entries: clients.iter().map(|c| record(c, true, true)).collect(),
    }
}

fn beat(last_seq: u64, entries: u64) -> Beat {
    Beat {
        last_seq,
        entries,
        node: NodeInfo {
            name: "a".into(),
            ..NodeInfo::default()
        },
    }
}

fn push(kind: &str, client: &str) -> (String, String) {
    (kind.to_string(), client.to_string())
}

#[tokio::test]
async fn unknown_origin_syncs_then_applies_buffered_deltas_past_the_snapshot() {
    let mut f = fixture();
    let job = f
        .replica
        .on_delta(origin("a-1"), delta(3, vec![join("x"), join("y")]), f.now)
        .unwrap()
        .expect("unknown origin → sync");
    assert_eq!((job.node.as_str(), &*job.incarnation), ("a", "a-1"));
    // More deltas while the snapshot is on its way are buffered, not applied.
    assert!(
        f.replica
            .on_delta(origin("a-1"), delta(5, vec![leave("x")]), f.now)
            .unwrap()
            .is_none()
    );
    assert!(f.pushes().is_empty());
    assert!(!f.replica.all_synced());
    // The snapshot is at seq 3: it has x (seq 3) but not y (seq 4).
    assert!(
        f.replica
            .on_snapshot(&job, snapshot(3, &["w", "x"]), f.now)
            .is_none()
    );
    let mut pushes = f.pushes();
    // The snapshot's own joins come in map order; the buffered deltas after them, in order.
    pushes[..2].sort();
    assert_eq!(
        pushes,
        vec![
            push("join", "w"),
            push("join", "x"),
            push("join", "y"),
            push("leave", "x")
        ]
    );
    assert_eq!(f.members(), ["w", "y"]);
    assert!(f.replica.all_synced());
    // A stale result of the same ticket is ignored.
    assert!(
        f.replica
            .on_snapshot(&job, snapshot(1, &[]), f.now)
            .is_none()
    );
    assert_eq!(f.members(), ["w", "y"]);
}

fn live_peer(f: &mut Fixture, clients: &[&str]) -> u64 {
    let job = f
        .replica
        .on_heartbeat(origin("a-1"), beat(0, 0), f.now)
        .unwrap()
        .unwrap();
    let seq = clients.len() as u64;
    f.replica.on_snapshot(&job, snapshot(seq, clients), f.now);
    f.pushes();
    seq
}

#[tokio::test]
async fn deltas_apply_in_order_once_and_a_gap_syncs() {
    let mut f = fixture();
    let seq = live_peer(&mut f, &["a1"]);
    assert!(
        f.replica
            .on_delta(origin("a-1"), delta(seq + 1, vec![join("b")]), f.now)
            .unwrap()
            .is_none()
    );
    // A duplicate (already applied) changes nothing and pushes nothing.
    assert!(
        f.replica
            .on_delta(origin("a-1"), delta(seq + 1, vec![join("b")]), f.now)
            .unwrap()
            .is_none()
    );
    assert_eq!(f.pushes(), vec![push("join", "b")]);
    // seq + 2 is missing.
    let job = f
        .replica
        .on_delta(origin("a-1"), delta(seq + 3, vec![join("d")]), f.now)
        .unwrap()
        .expect("gap → sync");
    assert!(f.pushes().is_empty());
    f.replica
        .on_snapshot(&job, snapshot(seq + 2, &["a1", "b", "c"]), f.now);
    assert_eq!(f.pushes(), vec![push("join", "c"), push("join", "d")]);
    assert_eq!(f.members(), ["a1", "b", "c", "d"]);
}

#[tokio::test]
async fn a_gap_in_the_buffer_after_the_snapshot_syncs_again() {
    let mut f = fixture();
    let job = f
        .replica
        .on_heartbeat(origin("a-1"), beat(0, 0), f.now)
        .unwrap()
        .unwrap();
    f.replica
        .on_delta(origin("a-1"), delta(9, vec![join("late")]), f.now)
        .unwrap();
    let next = f
        .replica
        .on_snapshot(&job, snapshot(5, &["s"]), f.now)
        .expect("6..8 missing");
    assert_ne!(next.ticket, job.ticket);
    assert_eq!(f.pushes(), vec![push("join", "s")]);
    f.replica
        .on_snapshot(&next, snapshot(8, &["s", "t"]), f.now);
    assert_eq!(f.pushes(), vec![push("join", "t"), push("join", "late")]);
}

#[tokio::test]
async fn heartbeat_ahead_of_the_applied_seq_syncs() {
    let mut f = fixture();
    let seq = live_peer(&mut f, &["x"]);
    assert!(
        f.replica
            .on_heartbeat(origin("a-1"), beat(seq, 1), f.now)
            .unwrap()
            .is_none()
    );
    let job = f
        .replica
        .on_heartbeat(origin("a-1"), beat(seq + 1, 2), f.now)
        .unwrap();
    assert!(job.is_some(), "missed delta → sync");
    // While it runs, heartbeats do not start another one.
    assert!(
        f.replica
            .on_heartbeat(origin("a-1"), beat(seq + 1, 2), f.now)
            .unwrap()
            .is_none()
    );
    // A failed sync is retried on the next heartbeat.
    f.replica.on_sync_failed(&job.unwrap());
    assert!(
        f.replica
            .on_heartbeat(origin("a-1"), beat(seq + 1, 2), f.now)
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn entry_count_mismatch_heals_at_most_once_per_timeout() {
    let mut f = fixture();
    let seq = live_peer(&mut f, &["x"]);
    let later = f.now + TIMEOUT * 2;
    let job = f
        .replica
        .on_heartbeat(origin("a-1"), beat(seq, 5), later)
        .unwrap()
        .expect("mismatch");
    f.replica.on_snapshot(&job, snapshot(seq, &["x"]), later);
    assert!(
        f.replica
            .on_heartbeat(origin("a-1"), beat(seq, 5), later)
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn new_incarnation_replaces_the_old_without_duplicates() {
    let mut f = fixture();
    live_peer(&mut f, &["old1", "kept"]);
    let job = f
        .replica
        .on_heartbeat(origin("a-2"), beat(0, 0), f.now)
        .unwrap()
        .expect("new incarnation → sync");
    // Until the new run's snapshot arrives, the old entries stay (no flicker).
    assert_eq!(f.members(), ["kept", "old1"]);
    f.replica
        .on_snapshot(&job, snapshot(2, &["kept", "new1"]), f.now);
    assert_eq!(
        f.pushes(),
        vec![push("leave", "old1"), push("join", "new1")]
    );
    assert_eq!(f.members(), ["kept", "new1"]);
    // The old run is retired: its late messages are rejected.
    assert_eq!(
        f.replica
            .on_delta(origin("a-1"), delta(3, vec![join("ghost")]), f.now)
            .unwrap_err(),
        Reject::RetiredIncarnation
    );
    assert_eq!(f.members(), ["kept", "new1"]);
}

#[tokio::test]
async fn silent_peers_go_down_with_leaves_but_not_while_our_link_is_down() {
    let mut f = fixture();
    live_peer(&mut f, &["x", "y"]);
    f.replica.link_down();
    f.replica.reap(f.now + TIMEOUT * 10);
    assert_eq!(
        f.members(),
        ["x", "y"],
        "no expiry while our own link is down"
    );
    let jobs = f.replica.link_up(f.now + TIMEOUT * 10).expect("transition");
    assert_eq!(jobs.len(), 1, "every peer is re-synced after a reconnect");
    assert!(f.replica.link_up(f.now + TIMEOUT * 10).is_none());
    // The reconnect gave the peer a fresh timeout.
    f.replica.reap(f.now + TIMEOUT * 10 + TIMEOUT / 2);
    assert_eq!(f.members(), ["x", "y"]);
    // The re-sync finds one real difference: only that is pushed.
    f.replica
        .on_snapshot(&jobs[0], snapshot(3, &["x"]), f.now + TIMEOUT * 10);
    assert_eq!(f.pushes(), vec![push("leave", "y")]);
    f.replica.reap(f.now + TIMEOUT * 12);
    assert_eq!(f.pushes(), vec![push("leave", "x")]);
    assert!(f.members().is_empty());
    assert!(f.replica.nodes().is_empty());
    // A peer that was merely silent may come back (same incarnation): it is synced again.
    assert!(
        f.replica
            .on_heartbeat(origin("a-1"), beat(3, 1), f.now + TIMEOUT * 12)
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn leaving_drops_at_once_and_retires_the_incarnation() {
    let mut f = fixture();
    live_peer(&mut f, &["x"]);
    f.replica.on_leaving(origin("a-1")).unwrap();
    assert_eq!(f.pushes(), vec![push("leave", "x")]);
    assert!(f.members().is_empty());
    assert_eq!(
        f.replica
            .on_heartbeat(origin("a-1"), beat(1, 1), f.now)
            .unwrap_err(),
        Reject::RetiredIncarnation
    );
    // The same node restarting is welcome.
    assert!(
        f.replica
            .on_heartbeat(origin("a-2"), beat(0, 0), f.now)
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn flags_decide_presence_and_pushes() {
    let mut f = fixture();
    live_peer(&mut f, &[]);
    let (k1, r1) = record("jl-only", false, true);
    let (k2, r2) = record("presence-only", true, false);
    f.replica
        .on_delta(
            origin("a-1"),
            delta(1, vec![Update::Join(k1, r1), Update::Join(k2, r2)]),
            f.now,
        )
        .unwrap();
    assert_eq!(f.pushes(), vec![push("join", "jl-only")]);
    assert_eq!(f.members(), ["presence-only"]);
    f.replica
        .on_delta(
            origin("a-1"),
            delta(3, vec![leave("jl-only"), leave("presence-only")]),
            f.now,
        )
        .unwrap();
    assert_eq!(f.pushes(), vec![push("leave", "jl-only")]);
    assert!(f.members().is_empty());
}

#[tokio::test]
async fn own_messages_are_ignored_and_a_name_clash_is_rejected() {
    let f = fixture();
    let me = Origin {
        node: "me",
        incarnation: "me-1",
    };
    assert!(
        f.replica
            .on_heartbeat(me, beat(0, 0), f.now)
            .unwrap()
            .is_none()
    );
    let other = Origin {
        node: "me",
        incarnation: "me-2",
    };
    assert_eq!(
        f.replica
            .on_heartbeat(other, beat(0, 0), f.now)
            .unwrap_err(),
        Reject::RetiredIncarnation
    );
    assert!(f.replica.nodes().is_empty());
}
