//! Slow readers, graceful shutdown, hot reload of the namespaces file, and the CLI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rollcall_tests::*;
use serde_json::{Value, json};

async fn metric(s: &ServerProcess, needle: &str) -> bool {
    let text = reqwest::get(s.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .any(|l| l.starts_with(needle) && !l.ends_with(" 0"))
}

/// A client that stops reading is closed with 3008 once its queue overflows, and a fast
/// subscriber of the same channel keeps getting every push meanwhile.
#[tokio::test]
async fn slow_reader_is_closed_with_3008_without_delaying_others() {
    let mut config = base_config();
    merge(&mut config, &json!({"client": {"queue_max_size": 200_000}}));
    let s = ServerProcess::start(&config);
    let (mut slow, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "slow"}))).await;
    slow.call("subscribe", json!({"channel": "chat:busy"}))
        .await;
    let (mut fast, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "fast"}))).await;
    fast.call("subscribe", json!({"channel": "chat:busy"}))
        .await;
    // Big conn_info makes every join/leave push ~20 KiB, so the kernel buffers fill quickly;
    // the 200 kB queue holds ten of them, so a reading client never overflows it.
    let info = json!({"pad": "x".repeat(20_000)});
    let (mut noisy, _) =
        Client::connect(&s.ws_url(), &token(json!({"sub": "noisy", "info": info}))).await;
    // Drain fast's own join; slow never reads from here on.
    assert!(fast.next_push().await.get("join").is_some());
    let started = Instant::now();
    let mut rounds = 0;
    while !metric(&s, r#"rollcall_disconnects_total{reason="slow"}"#).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "slow reader never closed after {rounds} rounds"
        );
        for _ in 0..20 {
            noisy
                .call("subscribe", json!({"channel": "chat:busy"}))
                .await;
            noisy
                .call("unsubscribe", json!({"channel": "chat:busy"}))
                .await;
            // The fast reader sees each join and leave right away.
            let t = Instant::now();
            assert!(next_from(&mut fast, "noisy").await.get("join").is_some());
            assert!(next_from(&mut fast, "noisy").await.get("leave").is_some());
            assert!(t.elapsed() < Duration::from_secs(1), "fast reader delayed");
        }
        rounds += 1;
    }
    // The slow reader, reading at last, finds the 3008 close after what was buffered.
    assert_eq!(slow.expect_close(Duration::from_secs(10)).await.0, 3008);
    assert_eq!(
        s.presence("chat:busy").await.len(),
        1,
        "slow client left presence"
    );
}

/// The next push about `user`, skipping others (the slow client's own leave, say).
async fn next_from(c: &mut Client, user: &str) -> Value {
    loop {
        let push = c.next_push().await;
        let info = push.get("join").or(push.get("leave")).map(|p| &p["info"]);
        if info.is_some_and(|i| i["user"] == user) {
            return push;
        }
    }
}

/// The next unsubscribe push, skipping the leaves of other subscribers removed with it.
async fn next_unsubscribe(c: &mut Client) -> Value {
    loop {
        let push = c.next_push().await;
        if push.get("unsubscribe").is_some() {
            return push;
        }
        assert!(push.get("leave").is_some(), "unexpected push {push}");
    }
}

#[tokio::test]
async fn sigterm_closes_clients_with_3001_and_exits_zero() {
    let mut s = ServerProcess::start(&base_config());
    let (mut a, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "1"}))).await;
    let (mut b, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "2"}))).await;
    a.call("subscribe", json!({"channel": "chat:1"})).await;
    b.call("subscribe", json!({"channel": "chat:1"})).await;
    s.signal("TERM");
    assert_eq!(a.expect_close(WAIT).await, (3001, "shutdown".into()));
    assert_eq!(b.expect_close(WAIT).await.0, 3001);
    let status = s.wait_exit(Duration::from_secs(5));
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        s.log()
    );
    assert!(s.log().contains("shutdown complete"), "{}", s.log());
}

/// Writes `content` the way the kubelet updates a mounted ConfigMap: a new timestamped dir,
/// then an atomic rename of the `..data` symlink.
fn kube_write(dir: &Path, generation: u32, content: &str) {
    let data = dir.join(format!("..2026_12_04_{generation:04}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("namespaces.yaml"), content).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("namespaces.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/namespaces.yaml", &link).unwrap();
    }
}

async fn subscribe_within(c: &mut Client, channel: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let reply = c.call("subscribe", json!({"channel": channel})).await;
        if reply.get("subscribe").is_some() || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn namespaces_file_hot_reload_with_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mount");
    std::fs::create_dir_all(&mount).unwrap();
    kube_write(
        &mount,
        1,
        "namespaces:\n  - name: room\n    presence: true\n    join_leave: true\n    force_push_join_leave: true\n    allow_subscribe_for_client: true\n",
    );
    let mut config = base_config();
    merge(
        &mut config,
        &json!({"channel": {
            "namespaces_file": mount.join("namespaces.yaml"),
            // The file's `chat` (presence off) wins over this one.
            "namespaces": [{"name": "chat", "presence": true, "allow_subscribe_for_client": true}]
        }}),
    );
    let s = ServerProcess::start_in(dir, &config, &[]);
    let (mut a, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "1"}))).await;
    let (mut b, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "2"}))).await;
    assert!(
        a.call("subscribe", json!({"channel": "room:1"}))
            .await
            .get("subscribe")
            .is_some()
    );
    a.next_push().await; // own join
    b.call("subscribe", json!({"channel": "room:1"})).await;
    a.next_push().await; // b's join
    b.next_push().await; // own join

    // Add `lobby`, keep `room`: applies within 1 s, no connection dropped.
    kube_write(
        &mount,
        2,
        "namespaces:\n  - name: room\n    presence: true\n    join_leave: true\n    force_push_join_leave: true\n    allow_subscribe_for_client: true\n  - name: lobby\n    presence: true\n    allow_subscribe_for_client: true\n  - name: chat\n    allow_subscribe_for_client: true\n",
    );
    let t = Instant::now();
    let reply = subscribe_within(&mut a, "lobby:1", Duration::from_secs(1)).await;
    assert!(
        reply.get("subscribe").is_some(),
        "lobby not applied: {reply}"
    );
    assert!(t.elapsed() <= Duration::from_millis(1500));
    // The file's chat (presence off) wins over the main config's.
    let (status, body) = s.api("presence", json!({"channel": "chat:1"})).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (200, Some(108)));

    // Remove `room`: subscribers get an unsubscribe push 2000 and leave presence.
    kube_write(
        &mount,
        3,
        "namespaces:\n  - name: lobby\n    presence: true\n    allow_subscribe_for_client: true\n",
    );
    let push = next_unsubscribe(&mut a).await;
    assert_eq!(push["channel"], "room:1");
    assert_eq!(push["unsubscribe"]["code"], 2000, "{push}");
    let push = next_unsubscribe(&mut b).await;
    assert_eq!(push["unsubscribe"]["code"], 2000, "{push}");
    let (_, body) = s.api("presence", json!({"channel": "room:1"})).await;
    assert_eq!(body["error"]["code"], 102);
    // Connections survive and still work.
    assert_eq!(s.presence("lobby:1").await.len(), 1);

    // A broken file is rejected; the previous set stays.
    kube_write(&mount, 4, "namespaces: [ {name: \"x\", presence: maybe");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        s.log().contains("rejected"),
        "no rejection logged:\n{}",
        s.log()
    );
    assert_eq!(s.presence("lobby:1").await.len(), 1);
    let reply = b.call("subscribe", json!({"channel": "lobby:2"})).await;
    assert!(reply.get("subscribe").is_some(), "{reply}");
}

fn rollcall(args: &[&str]) -> std::process::Output {
    Command::new(rollcall_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rollcall")
}

#[test]
fn cli_help_and_user_mistakes() {
    let out = rollcall(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "operator", "crd", "gentoken", "checkconfig"] {
        assert!(help.contains(cmd), "--help lacks {cmd}");
    }
    for sub in ["serve", "gentoken", "checkconfig", "operator"] {
        assert!(rollcall(&[sub, "--help"]).status.success(), "{sub} --help");
    }
    let out = rollcall(&["serve", "--config", "/nonexistent/rollcall.yaml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/rollcall.yaml"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = rollcall(&["bogus"]);
    assert!(!out.status.success());

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "http_api: {key: k}\nengine: {type: redis}\n").unwrap();
    let out = rollcall(&["checkconfig", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("engine"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    std::fs::write(&bad, "http_api: {key: k\n").unwrap();
    let out = rollcall(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "http_api: {key: k}\nclient: {tokne: 1}\n").unwrap();
    let out = rollcall(&["checkconfig", "--config", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("client.tokne"));
    let out = rollcall(&[
        "checkconfig",
        "--strict",
        "--config",
        good.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn gentoken_prints_a_token_that_connects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    std::fs::write(&path, serde_json::to_vec(&base_config()).unwrap()).unwrap();
    let out = rollcall(&[
        "gentoken",
        "--config",
        path.to_str().unwrap(),
        "--user",
        "77",
        "--info",
        r#"{"name":"G"}"#,
        "--channels",
        "chat:g",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().unwrap().trim().to_string();
    let s = ServerProcess::start(&base_config());
    let (_c, result) = Client::connect(&s.ws_url(), &token).await;
    assert_eq!(result["subs"], json!({"chat:g": {}}));
    assert_eq!(result["expires"], true);
    let presence = s.presence("chat:g").await;
    let entry = presence.values().next().unwrap();
    assert_eq!(entry["user"], "77");
    assert_eq!(entry["conn_info"], json!({"name": "G"}));
}

#[tokio::test]
async fn a_queue_smaller_than_a_leave_burst_is_warned_about() {
    let mut config = base_config();
    merge(
        &mut config,
        &json!({"client": {"channel_limit": 10000, "queue_max_size": 100000}}),
    );
    let s = ServerProcess::start(&config);
    assert!(
        s.log()
            .contains("client.queue_max_size is below channel_limit"),
        "{}",
        s.log()
    );
    let quiet = ServerProcess::start(&base_config());
    assert!(!quiet.log().contains("queue_max_size"), "{}", quiet.log());
}
