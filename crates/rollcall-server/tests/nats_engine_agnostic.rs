//! One single-node workload, run against the memory engine and the NATS engine: both must give
//! the same answers (cluster.md, invariant 4).

#[path = "../../../tests/src/nats.rs"]
#[allow(dead_code)]
mod nats_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nats_server::NatsServer;
use prometheus_client::registry::Registry;
use rollcall_core::config::{Dur, NatsConfig};
use rollcall_core::presence::{Channel, ClientId, ClientInfo, PresenceStats};
use rollcall_server::hub::Hub;
use rollcall_server::presence::memory::{Identity, MemoryEngine};
use rollcall_server::presence::{Entry, PresenceEngine, nats};
use serde_json::value::RawValue;

fn identity() -> Identity {
    Identity {
        uid: "uid-1".into(),
        name: "node-1".into(),
        started: Instant::now(),
    }
}

fn memory() -> Arc<dyn PresenceEngine> {
    Arc::new(MemoryEngine::new(Hub::new(), identity()))
}

async fn nats_engine(server: &NatsServer) -> Arc<dyn PresenceEngine> {
    let cfg = NatsConfig {
        url: server.url(),
        prefix: "agnostic".into(),
        heartbeat_interval: Dur::millis(100),
        node_timeout: Dur::millis(500),
    };
    let engine = nats::start(&cfg, Hub::new(), identity(), &mut Registry::default())
        .await
        .expect("start the NATS engine");
    tokio::time::timeout(Duration::from_secs(10), engine.wait_synced())
        .await
        .expect("a lone node syncs after one heartbeat interval");
    engine
}

fn json(s: &str) -> Option<Arc<RawValue>> {
    Some(Arc::from(RawValue::from_string(s.into()).unwrap()))
}

fn entry(channel: &str, client: &str, user: &str, presence: bool) -> Entry {
    Entry {
        channel: channel.into(),
        info: ClientInfo {
            client: client.into(),
            user: user.into(),
            conn_info: json(r#"{"device":"phone"}"#),
            chan_info: None,
        },
        presence,
        join_leave: true,
    }
}

fn stats(num_clients: u32, num_users: u32) -> PresenceStats {
    PresenceStats {
        num_clients,
        num_users,
    }
}

/// Runs the workload, asserting every answer, and returns a transcript of them.
fn workload(e: &dyn PresenceEngine) -> Vec<String> {
    let mut log = Vec::new();
    let mut record = |what: &str, e: &dyn PresenceEngine| {
        let mut presence: Vec<String> = ["chat:1", "chat:2"]
            .iter()
            .flat_map(|ch| e.presence(ch))
            .map(|i| serde_json::to_string(&i).unwrap())
            .collect();
        presence.sort();
        let mut channels = e.channels();
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        log.push(format!(
            "{what}: presence {presence:?} stats {:?} {:?} channels {channels:?}",
            e.presence_stats("chat:1"),
            e.presence_stats("chat:2"),
        ));
    };

    assert!(e.ready());
    assert!(e.presence("chat:1").is_empty());
    assert_eq!(e.presence_stats("chat:1"), stats(0, 0));
    assert!(e.channels().is_empty());
    let nodes = e.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].name.as_str(), nodes[0].uid.as_str()),
        ("node-1", "uid-1")
    );
    record("empty", e);

    // Read-your-writes: no await between add and query.
    e.add(entry("chat:1", "c1", "42", true));
    assert_eq!(e.presence("chat:1").len(), 1);
    e.add(entry("chat:1", "c2", "42", true));
    e.add(entry("chat:1", "anon", "", true));
    e.add(entry("chat:1", "hidden", "7", false)); // join/leave only: not in presence
    e.add(entry("chat:2", "c1", "42", true));
    assert_eq!(e.presence_stats("chat:1"), stats(3, 2));
    assert_eq!(e.presence_stats("chat:2"), stats(1, 1));
    let info = e
        .presence("chat:1")
        .into_iter()
        .find(|i| &*i.client == "c1")
        .unwrap();
    assert_eq!(
        serde_json::to_string(&info).unwrap(),
        r#"{"client":"c1","user":"42","conn_info":{"device":"phone"}}"#
    );
    record("added", e);

    // Adding the same (channel, client) again replaces it; the user counts move.
    let mut again = entry("chat:1", "c2", "43", true);
    again.info.chan_info = json(r#"{"role":"host"}"#);
    e.add(again);
    assert_eq!(e.presence_stats("chat:1"), stats(3, 3));
    record("replaced", e);

    // Replacing it with an entry outside presence takes it out of presence.
    e.add(entry("chat:1", "anon", "", false));
    assert_eq!(e.presence_stats("chat:1"), stats(2, 2));
    e.add(entry("chat:1", "anon", "", true));
    assert_eq!(e.presence_stats("chat:1"), stats(3, 3));
    record("hidden and back", e);

    // Unknown removals are ignored.
    e.remove(&Channel::from("chat:1"), &ClientId::from("nobody"));
    e.remove(&Channel::from("nowhere"), &ClientId::from("c1"));
    e.remove(&Channel::from("chat:1"), &ClientId::from("hidden"));
    assert_eq!(e.presence_stats("chat:1"), stats(3, 3));
    record("ignored removals", e);

    e.remove(&Channel::from("chat:1"), &ClientId::from("c1"));
    e.remove(&Channel::from("chat:2"), &ClientId::from("c1"));
    assert_eq!(e.presence_stats("chat:1"), stats(2, 2));
    assert_eq!(e.presence_stats("chat:2"), stats(0, 0));
    assert_eq!(e.channels().len(), 1, "an empty channel disappears");
    record("removed", e);

    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_nats_engines_answer_the_same() {
    let server = NatsServer::start();
    let mem = memory();
    let nats = nats_engine(&server).await;
    let from_memory = workload(mem.as_ref());
    let from_nats = workload(nats.as_ref());
    assert_eq!(from_memory, from_nats);
    mem.shutdown().await;
    nats.shutdown().await;
    assert!(!nats.ready(), "a stopped engine is not ready");
}
