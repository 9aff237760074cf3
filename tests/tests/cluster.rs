//! Black-box cluster tests: one real nats-server and several `rollcall serve` processes with
//! `engine.type: nats`, driven over real WebSockets and the HTTP API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rollcall_tests::nats::NatsServer;
use rollcall_tests::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The issue's fast setting: a crashed node's clients leave within 1.25 s.
const HEARTBEAT_MS: u64 = 250;
const TIMEOUT_MS: u64 = 1000;
/// How long to wait for start-up, convergence and such before failing.
const LONG: Duration = Duration::from_secs(15);

/// A node config in the cluster of `prefix` on `nats`.
fn node_config(nats: &NatsServer, prefix: &str, name: &str, hb_ms: u64, timeout_ms: u64) -> Value {
    let mut config = base_config();
    merge(
        &mut config,
        &json!({
            "node": {"name": name},
            "engine": {"type": "nats", "nats": {
                "url": nats.url(),
                "prefix": prefix,
                "heartbeat_interval": format!("{hb_ms}ms"),
                "node_timeout": format!("{timeout_ms}ms"),
            }},
            // Churn clients only read when they await a reply: no pings to answer meanwhile.
            "client": {"ping_interval": "120s", "pong_timeout": "60s"},
            "channel": {"namespaces": [
                {"name": "chat", "presence": true, "join_leave": true,
                 "force_push_join_leave": true, "allow_subscribe_for_client": true,
                 "allow_presence_for_subscriber": true},
                // Pushes only for subscribers that ask (the watchers), not for churn clients.
                {"name": "churn", "presence": true, "join_leave": true,
                 "allow_subscribe_for_client": true, "allow_presence_for_subscriber": true}
            ]},
        }),
    );
    config
}

/// A cluster of `rollcall serve` processes sharing one prefix.
struct Cluster {
    configs: Vec<Value>,
    nodes: Vec<Option<ServerProcess>>,
}

impl Cluster {
    /// Starts `n` nodes (`n1`…) and waits until each is ready.
    async fn start(
        nats: &NatsServer,
        prefix: &str,
        n: usize,
        hb_ms: u64,
        timeout_ms: u64,
    ) -> Cluster {
        let configs: Vec<Value> = (1..=n)
            .map(|i| node_config(nats, prefix, &format!("n{i}"), hb_ms, timeout_ms))
            .collect();
        let nodes: Vec<Option<ServerProcess>> = configs
            .iter()
            .map(|c| Some(ServerProcess::start(c)))
            .collect();
        for node in nodes.iter().flatten() {
            node.wait_ready(LONG).await;
        }
        Cluster { configs, nodes }
    }

    fn node(&self, i: usize) -> &ServerProcess {
        self.nodes[i].as_ref().expect("node is running")
    }

    fn live(&self) -> impl Iterator<Item = &ServerProcess> {
        self.nodes.iter().flatten()
    }

    /// SIGKILLs node `i`.
    fn kill(&mut self, i: usize) {
        let mut node = self.nodes[i].take().expect("node is running");
        node.signal("KILL");
        node.wait_exit(Duration::from_secs(5));
    }

    /// Starts node `i` again (a new incarnation under the same name); does not wait for ready.
    fn restart(&mut self, i: usize) -> &ServerProcess {
        assert!(self.nodes[i].is_none(), "node {i} still runs");
        self.nodes[i] = Some(ServerProcess::start(&self.configs[i]));
        self.node(i)
    }
}

async fn connect(node: &ServerProcess, user: &str) -> (Client, String) {
    let (c, result) = Client::connect(&node.ws_url(), &token(json!({"sub": user}))).await;
    (c, result["client"].as_str().unwrap().to_string())
}

async fn subscribe(c: &mut Client, channel: &str) {
    let reply = c.call("subscribe", json!({"channel": channel})).await;
    assert!(
        reply.get("subscribe").is_some(),
        "subscribe {channel}: {reply}"
    );
}

/// Client ids present in `channel` according to a node's HTTP API.
async fn members(node: &ServerProcess, channel: &str) -> BTreeSet<String> {
    node.presence(channel).await.keys().cloned().collect()
}

async fn is_ready(node: &ServerProcess) -> bool {
    reqwest::get(node.http("/ready"))
        .await
        .is_ok_and(|r| r.status().as_u16() == 200)
}

async fn metrics_text(node: &ServerProcess) -> String {
    reqwest::get(node.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `check` (cheap local API calls) until it holds; panics with `what` after `within`.
macro_rules! eventually {
    ($within:expr, $what:expr, $check:expr) => {{
        let deadline = Instant::now() + $within;
        loop {
            if $check {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not true within {:?}",
                $what,
                $within
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
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

/// A client subscribed to channels with join/leave pushes, recording every push in the
/// background (answering pings meanwhile).
struct Watcher {
    id: String,
    /// Presence right after subscribing: with the pushes that follow, the watcher's view.
    initial: BTreeMap<String, BTreeSet<String>>,
    log: Arc<Mutex<Vec<Push>>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    async fn start(node: &ServerProcess, channels: &[&str]) -> Watcher {
        let (mut c, id) = connect(node, "watcher").await;
        for ch in channels {
            let reply = c
                .call("subscribe", json!({"channel": ch, "join_leave": true}))
                .await;
            assert!(reply.get("subscribe").is_some(), "{reply}");
        }
        // Pushes queued meanwhile are consistent with this answer, so applying them after it
        // gives the right view (joins and leaves are idempotent on a set).
        let mut initial = BTreeMap::new();
        for ch in channels {
            let reply = c.call("presence", json!({"channel": ch})).await;
            let ids: BTreeSet<String> = reply["presence"]["presence"]
                .as_object()
                .unwrap_or_else(|| panic!("presence: {reply}"))
                .keys()
                .filter(|k| **k != id)
                .cloned()
                .collect();
            initial.insert(ch.to_string(), ids);
        }
        let log: Arc<Mutex<Vec<Push>>> = Arc::default();
        let notify: Arc<Notify> = Arc::default();
        let (l, n, me) = (log.clone(), notify.clone(), id.clone());
        let task = tokio::spawn(async move {
            loop {
                match c.next_event(Duration::from_secs(3600)).await {
                    Some(Event::Push(p)) => {
                        let channel = p["channel"].as_str().unwrap_or_default().to_string();
                        for (key, kind) in [("join", Kind::Join), ("leave", Kind::Leave)] {
                            if let Some(body) = p.get(key) {
                                let client = body["info"]["client"].as_str().unwrap().to_string();
                                if client != me {
                                    l.lock().unwrap().push(Push {
                                        kind,
                                        channel: channel.clone(),
                                        client,
                                        at: Instant::now(),
                                    });
                                }
                            }
                        }
                        n.notify_waiters();
                    }
                    Some(Event::Ping) => c.pong().await,
                    Some(Event::Closed(..)) | None => return,
                }
            }
        });
        Watcher {
            id,
            initial,
            log,
            notify,
            task,
        }
    }

    fn pushes(&self) -> Vec<Push> {
        self.log.lock().unwrap().clone()
    }

    fn seen(&self) -> Vec<(Kind, String)> {
        self.pushes()
            .into_iter()
            .map(|p| (p.kind, p.client))
            .collect()
    }

    /// Waits until `done` holds for the pushes so far.
    async fn wait_until(&self, what: &str, within: Duration, done: impl Fn(&[Push]) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.pushes()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "{what}: not seen within {within:?}; pushes: {:?}",
                    self.seen()
                );
            }
        }
    }

    /// Per (channel, client), pushes alternate join/leave. `strict`: the first one is a join
    /// (the watcher was there before the client subscribed).
    fn assert_alternating(&self, strict: bool) {
        let mut state: BTreeMap<(String, String), Kind> = BTreeMap::new();
        for p in self.pushes() {
            let prev = state.insert((p.channel.clone(), p.client.clone()), p.kind);
            let ok = match (prev, p.kind) {
                (None, Kind::Leave) => !strict,
                (None | Some(Kind::Leave), Kind::Join) | (Some(Kind::Join), Kind::Leave) => true,
                _ => false,
            };
            assert!(
                ok,
                "watcher {}: {:?} of {} in {} after {prev:?} (duplicate or orphan push)",
                self.id, p.kind, p.client, p.channel
            );
        }
    }

    /// Members per channel as this watcher can tell: presence when it subscribed, then every
    /// push applied.
    fn joined(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out = self.initial.clone();
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

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_identical_everywhere_and_join_leave_cross_nodes() {
    let nats = NatsServer::start();
    let cluster = Cluster::start(&nats, "rc", 3, HEARTBEAT_MS, TIMEOUT_MS).await;
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));

    // Every node lists all three, itself first.
    for (i, node) in cluster.live().enumerate() {
        let (_, body) = node.api("info", json!({})).await;
        let nodes = body["result"]["nodes"].as_array().unwrap().clone();
        let names: BTreeSet<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, BTreeSet::from(["n1", "n2", "n3"]), "{body}");
        assert_eq!(nodes[0]["name"], format!("n{}", i + 1));
    }

    let (mut a, a_id) = connect(n1, "alice").await;
    subscribe(&mut a, "chat:1").await;
    assert_eq!(a.next_push().await["join"]["info"]["client"], a_id.as_str());
    let (mut b, b_id) = connect(n2, "bob").await;
    subscribe(&mut b, "chat:1").await;
    // Reply first, then own join; a (on n1) gets b's join from n2.
    assert_eq!(b.next_push().await["join"]["info"]["client"], b_id.as_str());
    let push = a.next_push().await;
    assert_eq!(push["channel"], "chat:1");
    assert_eq!(push["join"]["info"]["client"], b_id.as_str());
    assert_eq!(push["join"]["info"]["user"], "bob");
    let (mut c, c_id) = connect(n3, "bob").await;
    subscribe(&mut c, "chat:1").await;
    assert_eq!(c.next_push().await["join"]["info"]["client"], c_id.as_str());
    for x in [&mut a, &mut b] {
        assert_eq!(x.next_push().await["join"]["info"]["client"], c_id.as_str());
    }

    // Presence (API and client-side) is the same on every node.
    let all: BTreeSet<String> = [&a_id, &b_id, &c_id].map(|s| s.to_string()).into();
    for node in cluster.live() {
        eventually!(
            LONG,
            "presence replicated",
            members(node, "chat:1").await == all
        );
        let (_, stats) = node
            .api("presence_stats", json!({"channel": "chat:1"}))
            .await;
        assert_eq!(stats["result"], json!({"num_clients": 3, "num_users": 2}));
        let (_, chans) = node.api("channels", json!({"pattern": "chat:*"})).await;
        assert_eq!(chans["result"]["channels"]["chat:1"]["num_clients"], 3);
    }
    let reply = c.call("presence", json!({"channel": "chat:1"})).await;
    let ids: BTreeSet<String> = reply["presence"]["presence"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(ids, all);

    // Unsubscribe on n2 and disconnect on n3: leaves reach the other nodes; no own leave.
    b.call("unsubscribe", json!({"channel": "chat:1"})).await;
    for x in [&mut a, &mut c] {
        assert_eq!(
            x.next_push().await["leave"]["info"]["client"],
            b_id.as_str()
        );
    }
    c.close().await;
    assert_eq!(
        a.next_push().await["leave"]["info"]["client"],
        c_id.as_str()
    );
    b.expect_no_push(Duration::from_millis(300)).await;
    for node in cluster.live() {
        eventually!(
            LONG,
            "leaves replicated",
            members(node, "chat:1").await == BTreeSet::from([a_id.clone()])
        );
    }
    let text = metrics_text(n1).await;
    assert!(
        text.lines()
            .any(|l| l == r#"rollcall_cluster_peers{state="live"} 2"#),
        "cluster metrics on /metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_node_makes_its_clients_leave_within_the_bound() {
    let nats = NatsServer::start();
    let mut cluster = Cluster::start(&nats, "rc", 3, HEARTBEAT_MS, TIMEOUT_MS).await;
    let w1 = Watcher::start(cluster.node(0), &["chat:1"]).await;
    let w2 = Watcher::start(cluster.node(1), &["chat:1"]).await;
    let mut victims = Vec::new();
    for i in 0..30 {
        let (mut c, id) = connect(cluster.node(2), &format!("user{i}")).await;
        subscribe(&mut c, "chat:1").await;
        victims.push((c, id));
    }
    let ids: BTreeSet<String> = victims.iter().map(|(_, id)| id.clone()).collect();
    let count = |p: &[Push], kind: Kind| {
        p.iter()
            .filter(|p| p.kind == kind && ids.contains(&p.client))
            .count()
    };
    // (w1 also sees w2 subscribe.)
    for w in [&w1, &w2] {
        w.wait_until("joins of n3's clients", LONG, |p| {
            count(p, Kind::Join) == ids.len()
        })
        .await;
    }

    let killed = Instant::now();
    cluster.kill(2);
    let bound = Duration::from_millis(HEARTBEAT_MS + TIMEOUT_MS);
    for w in [&w1, &w2] {
        w.wait_until("a leave for each of n3's clients", LONG, |p| {
            count(p, Kind::Leave) == ids.len()
        })
        .await;
        let last = w.pushes().last().unwrap().at.duration_since(killed);
        eprintln!(
            "leaves after SIGKILL (heartbeat {HEARTBEAT_MS}ms, timeout {TIMEOUT_MS}ms): {last:?}"
        );
        assert!(last <= bound, "last leave after {last:?}; bound {bound:?}");
        w.assert_alternating(true);
    }
    for node in cluster.live() {
        assert!(members(node, "chat:1").await.contains(&w1.id));
        assert_eq!(
            members(node, "chat:1").await.len(),
            2,
            "only the watchers remain"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_syncs_before_ready_and_replaces_its_old_incarnation() {
    let nats = NatsServer::start();
    // Default timing: the restart (well under 3 s) must be what replaces the old entries.
    let mut cluster = Cluster::start(&nats, "rc", 3, 1000, 3000).await;
    let w1 = Watcher::start(cluster.node(0), &["chat:1"]).await;
    let (mut stay, stay_id) = connect(cluster.node(1), "stays").await;
    subscribe(&mut stay, "chat:1").await;
    let mut old = Vec::new();
    for i in 0..5 {
        let (mut c, id) = connect(cluster.node(2), &format!("old{i}")).await;
        subscribe(&mut c, "chat:1").await;
        old.push((c, id));
    }
    w1.wait_until("joins", LONG, |p| p.len() >= 6).await;
    let (_, info) = cluster.node(0).api("info", json!({})).await;
    let old_uid = info["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n3")
        .unwrap()["uid"]
        .clone();

    let killed = Instant::now();
    cluster.kill(2);
    let n3 = cluster.restart(2);
    // /ready turns 200 only once n3 has everything of n1 and n2.
    let deadline = Instant::now() + LONG;
    while !is_ready(n3).await {
        assert!(
            Instant::now() < deadline,
            "n3 not ready; log:\n{}",
            n3.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = members(n3, "chat:1").await;
    assert!(
        seen.contains(&stay_id) && seen.contains(&w1.id),
        "ready before its sync: {seen:?}"
    );
    for (_, id) in &old {
        assert!(
            !seen.contains(id),
            "n3 serves its old incarnation's entry {id}"
        );
    }
    // Peers replaced the old incarnation: a leave for each old entry, before node_timeout.
    w1.wait_until("leaves of the old incarnation", LONG, |p| {
        p.iter().filter(|p| p.kind == Kind::Leave).count() == old.len()
    })
    .await;
    let took = w1.pushes().last().unwrap().at.duration_since(killed);
    assert!(
        took < Duration::from_secs(3),
        "replacement waited for node_timeout: {took:?}"
    );
    // New clients on the new incarnation; nobody is duplicated.
    let (mut fresh, fresh_id) = connect(cluster.node(2), "fresh").await;
    subscribe(&mut fresh, "chat:1").await;
    let want: BTreeSet<String> = [&w1.id, &stay_id, &fresh_id].map(|s| s.to_string()).into();
    for node in cluster.live() {
        eventually!(
            LONG,
            "convergence after restart",
            members(node, "chat:1").await == want
        );
        let (_, info) = node.api("info", json!({})).await;
        let nodes = info["result"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{info}");
        let n3_uid = &nodes.iter().find(|n| n["name"] == "n3").unwrap()["uid"];
        assert_ne!(n3_uid, &old_uid, "the old incarnation is still listed");
    }
    w1.wait_until("fresh joins", LONG, |p| p.len() >= 12).await;
    w1.assert_alternating(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_within_node_timeout_causes_no_leaves_and_converges() {
    let mut nats = NatsServer::start();
    let cluster = Cluster::start(&nats, "rc", 3, 1000, 3000).await;
    let w1 = Watcher::start(cluster.node(0), &["chat:1"]).await;
    let w3 = Watcher::start(cluster.node(2), &["chat:1"]).await;
    let mut clients = Vec::new();
    for (i, node) in cluster.live().enumerate() {
        let (mut c, id) = connect(node, &format!("u{i}")).await;
        subscribe(&mut c, "chat:1").await;
        clients.push((c, id));
    }
    // w1 also saw w3 subscribe; w3 came after w1.
    w1.wait_until("joins", LONG, |p| p.len() >= 4).await;
    w3.wait_until("joins", LONG, |p| p.len() >= 3).await;

    nats.kill();
    eventually!(
        LONG,
        "n1 reports not ready while NATS is down",
        !is_ready(cluster.node(0)).await
    );
    // A change during the outage: u1 (on n2) leaves; only n2 knows for now.
    let (gone, gone_id) = clients.remove(1);
    gone.close().await;
    // New clients are still accepted during the outage (a synced node serves from its
    // replica); their subscription reaches the peers once NATS is back.
    let (mut late, late_id) = connect(cluster.node(2), "late").await;
    subscribe(&mut late, "chat:2").await;
    tokio::time::sleep(Duration::from_millis(800)).await; // the outage lasts ~1 s
    nats.restart();
    let back = Instant::now();
    eventually!(
        LONG,
        "the client connected during the outage is seen on n1",
        members(cluster.node(0), "chat:2").await == BTreeSet::from([late_id.clone()])
    );

    let want: BTreeSet<String> = clients
        .iter()
        .map(|(_, id)| id.clone())
        .chain([w1.id.clone(), w3.id.clone()])
        .collect();
    for node in cluster.live() {
        eventually!(
            LONG,
            "convergence after the NATS restart",
            members(node, "chat:1").await == want
        );
        eventually!(LONG, "ready again", is_ready(node).await);
    }
    eprintln!("converged {:?} after NATS came back", back.elapsed());
    // Past node_timeout + heartbeat: the only leave anyone saw is the real one.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    for (w, joins) in [(&w1, 4), (&w3, 3)] {
        let leaves: Vec<String> = w
            .pushes()
            .into_iter()
            .filter(|p| p.kind == Kind::Leave)
            .map(|p| p.client)
            .collect();
        assert_eq!(
            leaves,
            std::slice::from_ref(&gone_id),
            "watcher {} saw a leave storm",
            w.id
        );
        assert_eq!(w.pushes().len(), joins + 1, "{:?}", w.seen());
        w.assert_alternating(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_makes_peers_drop_the_nodes_clients_within_a_second() {
    let nats = NatsServer::start();
    let mut cluster = Cluster::start(&nats, "rc", 2, 1000, 3000).await;
    let w1 = Watcher::start(cluster.node(0), &["chat:1"]).await;
    let mut leaving = Vec::new();
    for i in 0..10 {
        let (mut c, id) = connect(cluster.node(1), &format!("u{i}")).await;
        subscribe(&mut c, "chat:1").await;
        leaving.push((c, id));
    }
    w1.wait_until("joins", LONG, |p| p.len() >= 10).await;
    let stopped = Instant::now();
    let mut node = cluster.nodes[1].take().unwrap();
    node.signal("TERM");
    w1.wait_until("leaves", LONG, |p| p.len() >= 20).await;
    let took = w1.pushes().last().unwrap().at.duration_since(stopped);
    eprintln!("leaves after SIGTERM: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "peers dropped the node after {took:?}"
    );
    let (c, _) = &mut leaving[0];
    assert_eq!(c.expect_close(LONG).await.0, 3001);
    assert!(node.wait_exit(LONG).success());
    assert_eq!(
        members(cluster.node(0), "chat:1").await,
        BTreeSet::from([w1.id.clone()])
    );
    w1.assert_alternating(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_with_different_prefixes_never_see_each_other() {
    let nats = NatsServer::start();
    let blue = Cluster::start(&nats, "blue", 2, HEARTBEAT_MS, TIMEOUT_MS).await;
    let green = Cluster::start(&nats, "green", 1, HEARTBEAT_MS, TIMEOUT_MS).await;
    let (mut b, b_id) = connect(blue.node(0), "b").await;
    subscribe(&mut b, "chat:1").await;
    let (mut g, g_id) = connect(green.node(0), "g").await;
    subscribe(&mut g, "chat:1").await;
    eventually!(
        LONG,
        "blue replicates",
        members(blue.node(1), "chat:1").await == BTreeSet::from([b_id.clone()])
    );
    assert_eq!(
        members(green.node(0), "chat:1").await,
        BTreeSet::from([g_id.clone()])
    );
    // Same node names (n1) in both clusters, and yet each lists only its own.
    let (_, info) = green.node(0).api("info", json!({})).await;
    assert_eq!(
        info["result"]["nodes"].as_array().unwrap().len(),
        1,
        "{info}"
    );
    let (_, info) = blue.node(1).api("info", json!({})).await;
    assert_eq!(
        info["result"]["nodes"].as_array().unwrap().len(),
        2,
        "{info}"
    );
    // Each sees its own join, and nothing from the other cluster.
    assert_eq!(b.next_push().await["join"]["info"]["client"], b_id.as_str());
    assert_eq!(g.next_push().await["join"]["info"]["client"], g_id.as_str());
    b.expect_no_push(Duration::from_millis(300)).await;
    g.expect_no_push(Duration::from_millis(300)).await;
}

/// One churn client: its connection, node, and channels.
struct ChurnClient {
    client: Client,
    id: String,
    node: usize,
    subs: BTreeSet<String>,
}

/// Thousands of seeded subscribes, unsubscribes and disconnects spread over three nodes, with
/// two node crashes + restarts and a NATS restart along the way. Once quiet, every node returns
/// the same presence, equal to the live subscriptions, and the watchers saw join and leave
/// alternate for every client. Replay a failure with `CHURN_SEED=<seed>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_churn_converges_without_duplicates() {
    let seed: u64 = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_601);
    eprintln!("churn seed {seed} (CHURN_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nats = NatsServer::start();
    let mut cluster = Cluster::start(&nats, "churn", 3, HEARTBEAT_MS, TIMEOUT_MS).await;
    let channels: Vec<String> = (0..6).map(|i| format!("churn:{i}")).collect();
    let ch: Vec<&str> = channels.iter().map(String::as_str).collect();
    // Watchers on n1 and n2 live through the whole run; n3's is replaced with the node.
    // (watcher, was there before any churn client): only those can demand that a client's
    // first push is a join.
    let mut watchers = [
        Some((Watcher::start(cluster.node(0), &ch).await, true)),
        Some((Watcher::start(cluster.node(1), &ch).await, true)),
        Some((Watcher::start(cluster.node(2), &ch).await, true)),
    ];
    let mut retired: Vec<(Watcher, bool)> = Vec::new();
    let mut clients: Vec<ChurnClient> = Vec::new();
    let mut next_user = 0;
    let mut ops = 0;
    let started = Instant::now();

    for round in 0..8 {
        for _ in 0..500 {
            let live: Vec<usize> = (0..3).filter(|i| cluster.nodes[*i].is_some()).collect();
            let roll = rng.random_range(0..100);
            // Nodes refuse new connections while not ready (NATS down): only existing
            // clients act during the outage.
            let can_connect = round != 4;
            if can_connect && (clients.len() < 12 || roll < 8) {
                let node = live[rng.random_range(0..live.len())];
                next_user += 1;
                let (client, id) =
                    connect(cluster.node(node), &format!("u{}", next_user % 17)).await;
                clients.push(ChurnClient {
                    client,
                    id,
                    node,
                    subs: BTreeSet::new(),
                });
            } else if roll < 14 && clients.len() > 1 {
                let c = clients.swap_remove(rng.random_range(0..clients.len()));
                c.client.close().await;
            } else {
                let i = rng.random_range(0..clients.len());
                let c = &mut clients[i];
                let channel = channels[rng.random_range(0..channels.len())].clone();
                let method = if c.subs.contains(&channel) {
                    "unsubscribe"
                } else {
                    "subscribe"
                };
                let reply = c.client.call(method, json!({"channel": channel})).await;
                assert!(reply.get(method).is_some(), "{method} {channel}: {reply}");
                if method == "subscribe" {
                    c.subs.insert(channel);
                } else {
                    c.subs.remove(&channel);
                }
            }
            ops += 1;
        }
        match round {
            // Crash n3: its clients are gone (their sockets die with it). After round 1 it
            // comes back at once (peers replace the old incarnation); after round 5 only once
            // the peers have expired it.
            1 | 5 => {
                cluster.kill(2);
                retired.push(watchers[2].take().unwrap());
                clients.retain(|c| c.node != 2);
            }
            2 | 6 => {
                if round == 6 {
                    for node in cluster.live() {
                        eventually!(LONG, "peers expire n3", {
                            let (_, info) = node.api("info", json!({})).await;
                            info["result"]["nodes"].as_array().unwrap().len() == 2
                        });
                    }
                }
                cluster.restart(2).wait_ready(LONG).await;
                watchers[2] = Some((Watcher::start(cluster.node(2), &ch).await, false));
            }
            3 => nats.kill(), // round 4 runs during the outage
            4 => {
                nats.restart();
                for node in cluster.live() {
                    node.wait_ready(LONG).await;
                }
            }
            _ => {}
        }
    }
    eprintln!("churn: {ops} operations in {:?}", started.elapsed());

    // Quiet: every node answers the model.
    let watcher_ids: BTreeSet<String> = watchers
        .iter()
        .flatten()
        .chain(&retired)
        .map(|(w, _)| w.id.clone())
        .collect();
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &clients {
        for s in &c.subs {
            want.entry(s.clone()).or_default().insert(c.id.clone());
        }
    }
    let quiet = Instant::now();
    for node in cluster.live() {
        for channel in &channels {
            let expected = want.get(channel).cloned().unwrap_or_default();
            eventually!(
                LONG,
                format!("{channel} converges on {} (seed {seed})", node.addr),
                {
                    let mut have = members(node, channel).await;
                    have.retain(|id| !watcher_ids.contains(id));
                    have == expected
                }
            );
        }
    }
    eprintln!(
        "churn: converged {:?} after the last operation",
        quiet.elapsed()
    );
    for (w, early) in watchers.iter().flatten() {
        w.assert_alternating(*early);
        w.wait_until("the watcher's view matches presence", LONG, |_| {
            let mut joined = w.joined();
            for set in joined.values_mut() {
                set.retain(|id| !watcher_ids.contains(id));
            }
            joined.retain(|_, s| !s.is_empty());
            joined == want
        })
        .await;
    }
    for (w, early) in &retired {
        w.assert_alternating(*early);
    }
}
