//! The NATS engine in a cluster: several engines in one process against a real nats-server,
//! each with its own hub whose subscribers are outboxes the tests read.

#[path = "../../../tests/src/nats.rs"]
#[allow(dead_code)]
mod nats_server;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nats_server::NatsServer;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rollcall_core::config::{Dur, NatsConfig};
use rollcall_core::presence::{Channel, ClientId, ClientInfo};
use rollcall_server::hub::{Hub, Subscriber};
use rollcall_server::outbox::{Next, Outbox};
use rollcall_server::presence::memory::Identity;
use rollcall_server::presence::nats::{NatsEngine, start};
use rollcall_server::presence::{Entry, PresenceEngine};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Notify;

const CH: &str = "chat:1";
/// Longest any test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);

fn config(nats: &NatsServer, prefix: &str, heartbeat_ms: u64, timeout_ms: u64) -> NatsConfig {
    NatsConfig {
        url: nats.url(),
        prefix: prefix.into(),
        heartbeat_interval: Dur::millis(heartbeat_ms),
        node_timeout: Dur::millis(timeout_ms),
    }
}

/// One engine with its hub, metrics and a watcher subscribed to [`CH`] with join/leave pushes.
struct Node {
    name: String,
    engine: Arc<NatsEngine>,
    registry: Registry,
    watcher: Watcher,
}

impl Node {
    /// Starts an engine (not waiting for its start-up sync).
    async fn start(cfg: &NatsConfig, name: &str, uid: &str) -> Node {
        Self::start_watching(cfg, name, uid, &[CH]).await
    }

    async fn start_watching(cfg: &NatsConfig, name: &str, uid: &str, channels: &[&str]) -> Node {
        let hub = Hub::new();
        let watcher = Watcher::new(&hub, channels);
        let mut registry = Registry::default();
        let identity = Identity {
            uid: uid.into(),
            name: name.into(),
            started: Instant::now(),
        };
        let engine = start(cfg, hub, identity, &mut registry)
            .await
            .unwrap_or_else(|e| panic!("node {name}: {e}"));
        Node {
            name: name.into(),
            engine,
            registry,
            watcher,
        }
    }

    /// Starts an engine and waits until it is ready.
    async fn ready(cfg: &NatsConfig, name: &str, uid: &str) -> Node {
        let node = Self::start(cfg, name, uid).await;
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&self) {
        tokio::time::timeout(WAIT, self.engine.wait_synced())
            .await
            .unwrap_or_else(|_| panic!("node {} not synced within {WAIT:?}", self.name));
        assert!(
            self.engine.ready(),
            "node {} synced but not ready",
            self.name
        );
    }

    fn add(&self, channel: &str, client: &str) {
        self.engine.add(entry(channel, client, true, true));
    }

    fn remove(&self, channel: &str, client: &str) {
        self.engine
            .remove(&Channel::from(channel), &ClientId::from(client));
    }

    fn members(&self, channel: &str) -> BTreeSet<String> {
        self.engine
            .presence(channel)
            .into_iter()
            .map(|i| i.client.to_string())
            .collect()
    }

    /// A metric's value, by its exposition name with labels, e.g.
    /// `rollcall_cluster_rejected_messages_total{reason="malformed"}`; 0 if absent.
    fn metric(&self, series: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(k, _)| *k == series)
            .map_or(0.0, |(_, v)| v.parse().unwrap())
    }
}

fn entry(channel: &str, client: &str, presence: bool, join_leave: bool) -> Entry {
    Entry {
        channel: channel.into(),
        info: ClientInfo {
            client: client.into(),
            user: format!("user-{}", client.len() % 7).into(),
            conn_info: Some(Arc::from(
                RawValue::from_string(format!(r#"{{"name":"{client}"}}"#)).unwrap(),
            )),
            chan_info: None,
        },
        presence,
        join_leave,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Join,
    Leave,
}

#[derive(Debug, Clone)]
struct Push {
    kind: Kind,
    channel: String,
    client: String,
    at: Instant,
}

/// Reads every push a hub delivers to one subscriber.
#[derive(Clone)]
struct Watcher {
    log: Arc<Mutex<Vec<Push>>>,
    notify: Arc<Notify>,
}

impl Watcher {
    fn new(hub: &Hub, channels: &[&str]) -> Watcher {
        let (outbox, mut rx) = Outbox::new(1 << 28);
        for ch in channels {
            hub.subscribe(
                &Channel::from(*ch),
                &ClientId::from("watcher"),
                Subscriber {
                    outbox: outbox.clone(),
                    push_join_leave: true,
                },
            );
        }
        let w = Watcher {
            log: Arc::default(),
            notify: Arc::default(),
        };
        let (log, notify) = (w.log.clone(), w.notify.clone());
        tokio::spawn(async move {
            while let Next::Frame(frame) = rx.next().await {
                let at = Instant::now();
                let mut log = log.lock();
                for line in frame.split(|b| *b == b'\n') {
                    let v: Value = serde_json::from_slice(line).expect("push is JSON");
                    let push = &v["push"];
                    let channel = push["channel"].as_str().unwrap().to_string();
                    for (key, kind) in [("join", Kind::Join), ("leave", Kind::Leave)] {
                        if let Some(body) = push.get(key) {
                            let info = &body["info"];
                            assert!(info["user"].is_string(), "push without user: {v}");
                            log.push(Push {
                                kind,
                                channel: channel.clone(),
                                client: info["client"].as_str().unwrap().to_string(),
                                at,
                            });
                        }
                    }
                }
                drop(log);
                notify.notify_waiters();
            }
        });
        w
    }

    fn pushes(&self) -> Vec<Push> {
        self.log.lock().clone()
    }

    /// `(kind, client)` of every push so far, in order.
    fn seen(&self) -> Vec<(Kind, String)> {
        self.log
            .lock()
            .iter()
            .map(|p| (p.kind, p.client.clone()))
            .collect()
    }

    /// Waits until `done` holds for the pushes seen so far.
    async fn wait_until(&self, what: &str, done: impl Fn(&[Push]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A copy, so `done` may call the watcher's own helpers (the lock is not reentrant).
            let pushes = self.pushes();
            if done(&pushes) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "{what}: not seen within {WAIT:?}; pushes: {:?}",
                    self.seen()
                );
            }
        }
    }

    /// Waits until `n` pushes were seen.
    async fn wait_count(&self, n: usize) {
        self.wait_until(&format!("{n} pushes"), |p| p.len() >= n)
            .await;
    }

    /// Asserts the no-duplicates invariant: per (channel, client), pushes alternate
    /// join/leave starting with a join.
    fn assert_alternating(&self) {
        let mut state: BTreeMap<(String, String), Kind> = BTreeMap::new();
        for p in self.pushes() {
            let key = (p.channel.clone(), p.client.clone());
            let prev = state.insert(key, p.kind);
            match (prev, p.kind) {
                (None | Some(Kind::Leave), Kind::Join) | (Some(Kind::Join), Kind::Leave) => {}
                (prev, kind) => panic!(
                    "{kind:?} of {} in {} after {prev:?}: duplicate or orphan push; all: {:?}",
                    p.client,
                    p.channel,
                    self.seen()
                ),
            }
        }
    }

    /// Clients whose last push was a join, per channel.
    fn joined(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in self.pushes() {
            let set = out.entry(p.channel).or_default();
            match p.kind {
                Kind::Join => set.insert(p.client),
                Kind::Leave => set.remove(&p.client),
            };
        }
        out.retain(|_, s| !s.is_empty());
        out
    }
}

/// Polls `check` until it holds (queries are local and cheap); panics with `what` after WAIT.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not true within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nats_at_start_is_an_error_naming_the_url() {
    let nats = NatsServer::start();
    let cfg = config(&nats, "rc", 200, 1000);
    drop(nats);
    let err = match start(
        &cfg,
        Hub::new(),
        Identity {
            uid: "u".into(),
            name: "n".into(),
            started: Instant::now(),
        },
        &mut Registry::default(),
    )
    .await
    {
        Ok(_) => panic!("connected to a stopped NATS"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&cfg.url), "error should name the URL: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_replicate_to_every_node() {
    let nats = NatsServer::start();
    let cfg = config(&nats, "rc", 200, 1000);
    let a = Node::ready(&cfg, "a", "a-1").await;
    let b = Node::ready(&cfg, "b", "b-1").await;
    let c = Node::ready(&cfg, "c", "c-1").await;
    // Every node lists the whole cluster, itself first.
    for n in [&a, &b, &c] {
        eventually(&format!("{} lists 3 nodes", n.name), || {
            n.engine.nodes().len() == 3
        })
        .await;
        assert_eq!(n.engine.nodes()[0].name, n.name);
        assert_eq!(n.engine.nodes()[0].uid, format!("{}-1", n.name));
    }

    a.add(CH, "a1");
    a.add(CH, "a2");
    b.add(CH, "b1");
    // Presence-only (no join/leave) and join/leave-only entries.
    c.engine.add(entry(CH, "c-presence", true, false));
    c.engine.add(entry(CH, "c-events", false, true));
    let all = set(&["a1", "a2", "b1", "c-presence"]);
    for n in [&a, &b, &c] {
        eventually(&format!("{} sees every member", n.name), || {
            n.members(CH) == all
        })
        .await;
        let stats = n.engine.presence_stats(CH);
        // Users: "user-2" (a1, a2, b1) and "user-3" (c-presence).
        assert_eq!((stats.num_clients, stats.num_users), (4, 2), "{}", n.name);
        assert_eq!(n.engine.channels().len(), 1);
    }
    // Joins of the other nodes' join_leave entries, and nothing for presence-only ones.
    b.watcher.wait_count(3).await;
    let mut seen = b.watcher.seen();
    seen.sort();
    assert_eq!(
        seen,
        [
            (Kind::Join, "a1"),
            (Kind::Join, "a2"),
            (Kind::Join, "c-events")
        ]
        .map(|(k, c)| (k, c.to_string()))
    );
    let info = b
        .engine
        .presence(CH)
        .into_iter()
        .find(|i| &*i.client == "a1")
        .unwrap();
    assert_eq!(
        info.conn_info.unwrap().get(),
        r#"{"name":"a1"}"#,
        "conn_info replicated verbatim"
    );

    a.remove(CH, "a1");
    c.remove(CH, "c-events");
    c.remove(CH, "c-presence");
    let rest = set(&["a2", "b1"]);
    for n in [&a, &b, &c] {
        eventually(&format!("{} sees the removals", n.name), || {
            n.members(CH) == rest
        })
        .await;
    }
    b.watcher.wait_count(5).await;
    assert_eq!(
        b.watcher.joined()[CH],
        set(&["a2"]),
        "b's subscriber saw a1 and c-events leave"
    );
    for n in [&a, &b, &c] {
        n.watcher.assert_alternating();
    }
    assert!(b.metric("rollcall_cluster_deltas_received_total") >= 1.0);
    assert_eq!(b.metric("rollcall_cluster_peers{state=\"live\"}"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_leaves_within_node_timeout_plus_heartbeat() {
    let nats = NatsServer::start();
    // The issue's fast setting: leave after a crash in ≤ 1.25 s.
    let cfg = config(&nats, "rc", 250, 1000);
    let a = Node::ready(&cfg, "a", "a-1").await;
    let b = Node::ready(&cfg, "b", "b-1").await;
    let clients: Vec<String> = (0..200).map(|i| format!("a-client-{i}")).collect();
    for c in &clients {
        a.add(CH, c);
    }
    b.watcher.wait_count(clients.len()).await;

    let killed = Instant::now();
    drop(a); // no leaving announcement: like SIGKILL
    b.watcher
        .wait_until("a leave for each of a's clients", |p| {
            p.iter().filter(|p| p.kind == Kind::Leave).count() == clients.len()
        })
        .await;
    let last = b.watcher.pushes().last().unwrap().at;
    let latency = last.duration_since(killed);
    eprintln!("leave latency after crash (heartbeat 250ms, timeout 1s): {latency:?}");
    assert!(
        latency <= Duration::from_millis(1250),
        "leaves took {latency:?}, bound is node_timeout + heartbeat_interval = 1.25 s"
    );
    assert!(
        latency >= Duration::from_millis(700),
        "leaves after {latency:?}: the peer was declared down before node_timeout"
    );
    assert!(b.members(CH).is_empty());
    assert_eq!(b.engine.nodes().len(), 1);
    assert_eq!(
        b.metric("rollcall_cluster_peers_down_total{reason=\"timeout\"}"),
        1.0
    );
    b.watcher.assert_alternating();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_peer_is_dropped_at_once() {
    let nats = NatsServer::start();
    let cfg = config(&nats, "rc", 200, 3000);
    let a = Node::ready(&cfg, "a", "a-1").await;
    let b = Node::ready(&cfg, "b", "b-1").await;
    a.add(CH, "x");
    a.add(CH, "y");
    b.watcher.wait_count(2).await;
    let stopped = Instant::now();
    a.engine.shutdown().await;
    assert!(!a.engine.ready(), "not ready after shutdown");
    b.watcher.wait_count(4).await;
    let latency = b.watcher.pushes()[3].at.duration_since(stopped);
    eprintln!("leave latency after graceful shutdown: {latency:?}");
    assert!(
        latency < Duration::from_millis(1000),
        "leaving took {latency:?}; node_timeout is 3 s, the announcement must be faster"
    );
    assert!(b.members(CH).is_empty());
    assert_eq!(b.engine.nodes().len(), 1);
    assert_eq!(
        b.metric("rollcall_cluster_peers_down_total{reason=\"leaving\"}"),
        1.0
    );
    b.watcher.assert_alternating();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_incarnation_replaces_the_old_one_without_duplicates() {
    let nats = NatsServer::start();
    let cfg = config(&nats, "rc", 200, 3000);
    let b = Node::ready(&cfg, "b", "b-1").await;
    let a1 = Node::ready(&cfg, "a", "a-1").await;
    a1.add(CH, "old");
    a1.add(CH, "kept");
    b.watcher.wait_count(2).await;

    // Crash and restart under the same name, well within node_timeout.
    drop(a1);
    let restarted = Instant::now();
    let a2 = Node::start(&cfg, "a", "a-2").await;
    // Same (channel, client) key as before: not a new join. And one genuinely new entry.
    a2.add(CH, "kept");
    a2.add(CH, "new");
    a2.wait_ready().await;
    eventually("b sees a-2's entries", || {
        b.members(CH) == set(&["kept", "new"])
    })
    .await;
    b.watcher.wait_count(4).await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "replacement took {took:?}; it must not wait for node_timeout (3 s)"
    );
    let seen = b.watcher.seen();
    assert_eq!(
        seen[2..].iter().cloned().collect::<BTreeSet<_>>(),
        [(Kind::Leave, "old"), (Kind::Join, "new")]
            .map(|(k, c)| (k, c.to_string()))
            .into_iter()
            .collect(),
        "only real differences are pushed: {seen:?}"
    );
    b.watcher.assert_alternating();
    let uids: Vec<String> = b.engine.nodes().into_iter().map(|n| n.uid).collect();
    assert_eq!(uids, ["b-1", "a-2"]);
    // Nothing more arrives (no late expiry of the old run).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(b.watcher.seen().len(), 4, "{:?}", b.watcher.seen());
    assert_eq!(b.members(CH), set(&["kept", "new"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_within_node_timeout_causes_no_leave_storm() {
    let mut nats = NatsServer::start();
    let cfg = config(&nats, "rc", 200, 2000);
    let a = Node::ready(&cfg, "a", "a-1").await;
    let b = Node::ready(&cfg, "b", "b-1").await;
    a.add(CH, "a-stays");
    a.add(CH, "a-goes");
    b.add(CH, "b-stays");
    b.watcher.wait_count(2).await;
    a.watcher.wait_count(1).await;

    nats.kill();
    eventually("a notices the outage", || !a.engine.ready()).await;
    // Changes while the link is down: published nowhere, recovered by the re-sync.
    a.remove(CH, "a-goes");
    a.add(CH, "a-new");
    tokio::time::sleep(Duration::from_millis(500)).await; // an outage of ~0.5 s
    nats.restart();
    let back = Instant::now();

    eventually("a and b converge", || {
        let all = set(&["a-stays", "a-new", "b-stays"]);
        a.members(CH) == all && b.members(CH) == all
    })
    .await;
    b.watcher.wait_count(4).await;
    eprintln!("convergence after NATS restart: {:?}", back.elapsed());
    assert_eq!(
        b.watcher.seen()[2..],
        [(Kind::Leave, "a-goes"), (Kind::Join, "a-new")].map(|(k, c)| (k, c.to_string())),
        "only the real differences are pushed"
    );
    eventually("both ready again", || a.engine.ready() && b.engine.ready()).await;
    // Past node_timeout: still no leave for anyone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(b.watcher.seen().len(), 4, "b: {:?}", b.watcher.seen());
    assert_eq!(a.watcher.seen().len(), 1, "a: {:?}", a.watcher.seen());
    assert_eq!(a.engine.nodes().len(), 2);
    assert_eq!(
        b.metric("rollcall_cluster_peers_down_total{reason=\"timeout\"}"),
        0.0
    );
    a.watcher.assert_alternating();
    b.watcher.assert_alternating();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_with_different_prefixes_never_see_each_other() {
    let nats = NatsServer::start();
    let blue = config(&nats, "blue", 200, 1000);
    let green = config(&nats, "green.rollcall", 200, 1000);
    let b1 = Node::ready(&blue, "n1", "b1").await;
    let b2 = Node::ready(&blue, "n2", "b2").await;
    // Same node names in the other cluster: still separate.
    let g1 = Node::ready(&green, "n1", "g1").await;
    let g2 = Node::ready(&green, "n2", "g2").await;
    b1.add(CH, "blue-client");
    g1.add(CH, "green-client");
    eventually("each cluster replicates its own entries", || {
        b2.members(CH) == set(&["blue-client"]) && g2.members(CH) == set(&["green-client"])
    })
    .await;
    // A change in each, then both quiet: nothing crossed.
    b2.add(CH, "blue-2");
    g2.add(CH, "green-2");
    eventually("second changes replicated", || {
        b1.members(CH).len() == 2 && g1.members(CH).len() == 2
    })
    .await;
    assert_eq!(b1.members(CH), set(&["blue-client", "blue-2"]));
    assert_eq!(g1.members(CH), set(&["green-client", "green-2"]));
    for n in [&b1, &b2, &g1, &g2] {
        assert_eq!(
            n.engine.nodes().len(),
            2,
            "{} sees only its cluster",
            n.name
        );
        assert_eq!(
            n.metric("rollcall_cluster_rejected_messages_total{reason=\"retired_incarnation\"}"),
            0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_subjects_is_rejected_and_counted() {
    let nats = NatsServer::start();
    let cfg = config(&nats, "rc", 200, 1000);
    let a = Node::ready(&cfg, "a", "a-1").await;
    let b = Node::ready(&cfg, "b", "b-1").await;
    a.add(CH, "real");
    eventually("b replicates", || b.members(CH) == set(&["real"])).await;

    let raw = async_nats::connect(nats.url()).await.unwrap();
    let v = rollcall_server::presence::nats::FORMAT_VERSION;
    let sends: Vec<(&str, Vec<u8>)> = vec![
        ("rc.delta", vec![]),                          // empty
        ("rc.delta", vec![v + 1, 1, 2, 3]),            // unknown version
        ("rc.heartbeat", b"{\"json\":true}".to_vec()), // unknown version ('{')
        ("rc.delta", vec![v, 0xff, 0xff, 0xff, 0xff]), // malformed
        ("rc.leaving", vec![v]),                       // malformed (nothing after the version)
        ("rc.sync.a", vec![v, 9, 9]),                  // malformed sync request
        ("rc.whatever", vec![v, 0]),                   // unknown subject
    ];
    for (subject, payload) in &sends {
        raw.publish(*subject, payload.clone().into()).await.unwrap();
    }
    // A well-formed delta whose entry carries invalid JSON (it would break clients' pushes).
    let bad = forged_delta(v, "z", "z-1", 1, "chat:1", "evil", "{not json");
    raw.publish("rc.delta", bad.into()).await.unwrap();
    // A well-formed leaving frame on the delta subject.
    let wrong = forged_leaving(v, "a", "a-1");
    raw.publish("rc.delta", wrong.into()).await.unwrap();
    raw.flush().await.unwrap();

    let label =
        |reason: &str| format!("rollcall_cluster_rejected_messages_total{{reason=\"{reason}\"}}");
    let expect = [
        ("empty", 1.0),
        ("unknown_version", 2.0),
        ("malformed", 2.0),
        ("invalid", 1.0),
        ("wrong_subject", 2.0),
    ];
    eventually("b counts every bad message", || {
        expect.iter().all(|(r, n)| b.metric(&label(r)) == *n)
    })
    .await;
    eventually("a counts the bad sync request", || {
        a.metric(&label("malformed")) == 3.0
    })
    .await;
    // Nothing was applied and both nodes still work.
    assert_eq!(b.members(CH), set(&["real"]));
    assert_eq!(b.engine.nodes().len(), 2, "no phantom peer z");
    a.add(CH, "after");
    eventually("replication still works", || {
        b.members(CH) == set(&["real", "after"])
    })
    .await;
    assert!(a.engine.ready() && b.engine.ready());
}

/// Hand-encodes a one-join delta (format version 1: postcard, see `wire.rs`) so the test does
/// not depend on the engine's encoder.
fn forged_delta(
    version: u8,
    node: &str,
    inc: &str,
    seq: u64,
    channel: &str,
    client: &str,
    conn_info: &str,
) -> Vec<u8> {
    let mut b = vec![version, 0]; // Frame::Delta
    put_str(&mut b, node);
    put_str(&mut b, inc);
    b.push(seq as u8); // first_seq (varint < 128)
    b.push(0); // origin_time_us
    b.push(1); // one change
    b.push(0); // Change::Join
    put_str(&mut b, channel);
    put_str(&mut b, client);
    put_str(&mut b, "u");
    b.push(1); // Some(conn_info)
    put_str(&mut b, conn_info);
    b.push(0); // chan_info: None
    b.push(3); // flags
    b
}

fn forged_leaving(version: u8, node: &str, inc: &str) -> Vec<u8> {
    let mut b = vec![version, 2]; // Frame::Leaving
    put_str(&mut b, node);
    put_str(&mut b, inc);
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 128);
    b.push(s.len() as u8);
    b.extend_from_slice(s.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_syncs_before_it_is_ready() {
    let nats = NatsServer::start();
    let cfg = config(&nats, "rc", 300, 1500);
    let a = Node::ready(&cfg, "a", "a-1").await;
    for i in 0..500 {
        a.add(&format!("room:{}", i % 10), &format!("client-{i}"));
    }
    let b = Node::start(&cfg, "b", "b-1").await;
    assert!(!b.engine.ready(), "ready before the discovery window");
    b.wait_ready().await;
    let total: u32 = b.engine.channels().iter().map(|(_, s)| s.num_clients).sum();
    assert_eq!(total, 500, "everything is there the moment it is ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_of_100_000_entries() {
    let nats = NatsServer::start();
    let cfg = config(&nats, "rc", 200, 3000);
    let a = Node::ready(&cfg, "a", "a-1").await;
    for i in 0..100_000u32 {
        let client = format!("{:08x}-7d3e-4a1b-9c2f-{:012x}", i, i as u64 * 7919);
        let mut e = entry(&format!("room:{}", i % 1000), &client, true, i % 2 == 0);
        e.info.chan_info = (i % 10 == 0)
            .then(|| Arc::from(RawValue::from_string(r#"{"role":"host"}"#.into()).unwrap()));
        a.engine.add(e);
    }
    let started = Instant::now();
    let b = Node::start(&cfg, "b", "b-1").await;
    b.wait_ready().await;
    let ready_after = started.elapsed();
    let total: u32 = b.engine.channels().iter().map(|(_, s)| s.num_clients).sum();
    assert_eq!(total, 100_000);
    let sync = b.metric("rollcall_cluster_sync_duration_seconds_sum");
    let bytes = b.metric("rollcall_cluster_bytes_received_total");
    eprintln!(
        "sync of 100 000 entries: {:.0} ms (request → applied), {:.1} MB; start → ready {:?} \
         (includes the {} discovery window)",
        sync * 1000.0,
        bytes / 1e6,
        ready_after,
        cfg.heartbeat_interval
    );
    // Release builds take well under a second; this debug-build bound only catches regressions.
    let bound = if cfg!(debug_assertions) { 5.0 } else { 1.0 };
    assert!(sync < bound, "sync took {sync:.2} s");
    assert_eq!(
        b.metric("rollcall_cluster_syncs_requested_total{result=\"ok\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_join_propagation_latency() {
    let nats = NatsServer::start();
    let cfg = config(&nats, "rc", 200, 1000);
    let a = Node::ready(&cfg, "a", "a-1").await;
    let b = Node::ready(&cfg, "b", "b-1").await;
    let n = 500;
    let mut sent = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(2)); // 500 joins/s
    for i in 0..n {
        tick.tick().await;
        sent.push(Instant::now());
        a.add(CH, &format!("c{i}"));
    }
    b.watcher.wait_count(n).await;
    let pushes = b.watcher.pushes();
    let mut lat: Vec<Duration> = pushes
        .iter()
        .map(|p| {
            let i: usize = p.client[1..].parse().unwrap();
            p.at.duration_since(sent[i])
        })
        .collect();
    lat.sort();
    let (p50, p99) = (lat[n / 2], lat[n * 99 / 100]);
    eprintln!("cross-node join propagation at 500/s: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    assert!(b.metric("rollcall_cluster_propagation_latency_seconds_count") >= 1.0);
}

/// Thousands of seeded random changes over three nodes, with a node crash + restart and a
/// NATS restart along the way; once quiet, every node must agree with the model and every
/// watcher must have seen join/leave alternate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_churn_converges_without_duplicates() {
    let seed: u64 = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("churn seed {seed} (set CHURN_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nats = NatsServer::start();
    let cfg = config(&nats, "churn", 200, 1500);
    let channels: Vec<String> = (0..8).map(|i| format!("chat:{i}")).collect();
    let ch_refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    let names = ["a", "b", "c"];
    // `None` while a node is crashed.
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for name in names {
        let node = Node::start_watching(&cfg, name, &format!("{name}-0"), &ch_refs).await;
        node.wait_ready().await;
        nodes.push(Some(node));
    }
    // The model: live (channel, client) per node.
    let mut model: Vec<BTreeSet<(String, String)>> = vec![BTreeSet::new(); 3];
    let mut next_client = 0u32;
    let mut incarnation = [0u32; 3];
    let mut retired_watchers: Vec<Watcher> = Vec::new();

    for round in 0..8 {
        for op in 0..600 {
            let n = rng.random_range(0..3);
            let Some(node) = &nodes[n] else { continue };
            if model[n].is_empty() || rng.random_bool(0.6) {
                let ch = channels[rng.random_range(0..channels.len())].clone();
                let client = format!("{}-{next_client}", names[n]);
                next_client += 1;
                node.add(&ch, &client);
                model[n].insert((ch, client));
            } else {
                let i = rng.random_range(0..model[n].len());
                let key = model[n].iter().nth(i).unwrap().clone();
                node.remove(&key.0, &key.1);
                model[n].remove(&key);
            }
            if op % 50 == 0 {
                // Spread the changes over time so they interleave with deltas in flight.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        match round {
            // Crash a node; the next round runs without it.
            1 | 5 => {
                let n = rng.random_range(0..3);
                let old = nodes[n].take().unwrap();
                retired_watchers.push(old.watcher.clone());
                drop(old);
                model[n].clear(); // its clients are gone with it
            }
            // Restart it: right away after round 1 (replaced as a new incarnation), after
            // its expiry by the others after round 5 (awaited: every trace of it is gone).
            2 | 6 => {
                let n = nodes.iter().position(Option::is_none).unwrap();
                if round == 6 {
                    let gone = |node: &Node| {
                        channels.iter().all(|ch| {
                            node.members(ch)
                                .iter()
                                .all(|c| !c.starts_with(&format!("{}-", names[n])))
                        })
                    };
                    for node in nodes.iter().flatten() {
                        let what = format!("{} expires {}", node.name, names[n]);
                        eventually(&what, || gone(node)).await;
                    }
                }
                incarnation[n] += 1;
                let uid = format!("{}-{}", names[n], incarnation[n]);
                let new = Node::start_watching(&cfg, names[n], &uid, &ch_refs).await;
                new.wait_ready().await;
                nodes[n] = Some(new);
            }
            // NATS dies; round 4's changes happen during the outage.
            3 => nats.kill(),
            4 => nats.restart(),
            _ => {}
        }
    }

    // Quiet: every node's presence equals the model, everywhere.
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ch, client) in model.iter().flatten() {
        want.entry(ch.clone()).or_default().insert(client.clone());
    }
    let nodes: Vec<Node> = nodes.into_iter().map(Option::unwrap).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let agree = nodes.iter().all(|node| {
            channels
                .iter()
                .all(|ch| node.members(ch) == want.get(ch).cloned().unwrap_or_default())
        });
        if agree {
            break;
        }
        if Instant::now() > deadline {
            for node in &nodes {
                for ch in &channels {
                    let have = node.members(ch);
                    let w = want.get(ch).cloned().unwrap_or_default();
                    if have != w {
                        eprintln!(
                            "{} {ch}: missing {:?}, ghosts {:?}",
                            node.name,
                            w.difference(&have).collect::<Vec<_>>(),
                            have.difference(&w).collect::<Vec<_>>()
                        );
                    }
                }
            }
            panic!("no convergence within {WAIT:?} (seed {seed})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Watchers saw exactly the other nodes' entries come and go, never twice in a row.
    for (n, node) in nodes.iter().enumerate() {
        node.watcher.assert_alternating();
        let mut remote: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, entries) in model.iter().enumerate() {
            if m != n {
                for (ch, client) in entries {
                    remote.entry(ch.clone()).or_default().insert(client.clone());
                }
            }
        }
        node.watcher
            .wait_until(
                &format!("{}'s pushes match the remote entries", node.name),
                |_| node.watcher.joined() == remote,
            )
            .await;
    }
    for w in &retired_watchers {
        w.assert_alternating();
    }
}
