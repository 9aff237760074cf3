//! The join/leave emission and delivery matrix of client-protocol.md, over real WebSockets.

use std::time::Duration;

use rollcall_tests::*;
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

fn server() -> ServerProcess {
    let mut config = base_config();
    merge(
        &mut config,
        &json!({"channel": {"namespaces": [
            // Forced pushes.
            {"name": "chat", "presence": true, "join_leave": true, "force_push_join_leave": true,
             "allow_subscribe_for_client": true, "allow_presence_for_subscriber": true},
            // Opt-in with permission (subscribers may see presence).
            {"name": "optin", "presence": true, "join_leave": true,
             "allow_subscribe_for_client": true, "allow_presence_for_subscriber": true},
            // Opt-in without presence permission.
            {"name": "noperm", "presence": true, "join_leave": true,
             "allow_subscribe_for_client": true},
            // Presence but no join_leave: nothing is emitted, even when forced.
            {"name": "quiet", "presence": true, "force_push_join_leave": true,
             "allow_subscribe_for_client": true, "allow_presence_for_subscriber": true}
        ]}}),
    );
    ServerProcess::start(&config)
}

async fn connect(s: &ServerProcess, user: &str) -> (Client, String) {
    let (c, result) = Client::connect(&s.ws_url(), &token(json!({"sub": user}))).await;
    (c, result["client"].as_str().unwrap().to_string())
}

fn join_of(push: &Value) -> &Value {
    push.get("join")
        .unwrap_or_else(|| panic!("expected a join push, got {push}"))
}

fn leave_of(push: &Value) -> &Value {
    push.get("leave")
        .unwrap_or_else(|| panic!("expected a leave push, got {push}"))
}

#[tokio::test]
async fn forced_push_reply_first_then_own_join_and_others_see_join_and_leave() {
    let s = server();
    let (mut a, a_id) = connect(&s, "1").await;
    let (mut b, b_id) = connect(&s, "2").await;

    // The subscribe reply arrives before the subscriber's own join.
    let id = a.send("subscribe", json!({"channel": "chat:1"})).await;
    let reply = a.reply(id).await;
    assert!(reply.get("subscribe").is_some(), "{reply}");
    let own = a.next_push().await;
    assert_eq!(own["channel"], "chat:1");
    assert_eq!(join_of(&own)["info"]["client"], a_id.as_str());
    assert_eq!(join_of(&own)["info"]["user"], "1");

    b.call("subscribe", json!({"channel": "chat:1"})).await;
    let push = a.next_push().await;
    assert_eq!(join_of(&push)["info"]["client"], b_id.as_str());
    assert_eq!(
        join_of(&b.next_push().await)["info"]["client"],
        b_id.as_str()
    );

    // b leaves: a sees the leave, b does not get its own.
    b.call("unsubscribe", json!({"channel": "chat:1"})).await;
    let push = a.next_push().await;
    assert_eq!(leave_of(&push)["info"]["client"], b_id.as_str());
    assert_eq!(leave_of(&push)["info"]["user"], "2");
    b.expect_no_push(QUIET).await;
}

#[tokio::test]
async fn disconnect_emits_leave() {
    let s = server();
    let (mut a, _) = connect(&s, "1").await;
    let (mut b, b_id) = connect(&s, "2").await;
    a.call("subscribe", json!({"channel": "chat:d"})).await;
    a.next_push().await; // own join
    b.call("subscribe", json!({"channel": "chat:d"})).await;
    a.next_push().await; // b's join
    b.close().await;
    let push = a.next_push().await;
    assert_eq!(leave_of(&push)["info"]["client"], b_id.as_str());
    assert_eq!(s.presence("chat:d").await.len(), 1);
}

#[tokio::test]
async fn opt_in_with_permission_gets_pushes_without_opt_in_gets_none() {
    let s = server();
    let (mut watcher, _) = connect(&s, "w").await;
    let (mut silent, _) = connect(&s, "s").await;
    watcher
        .call(
            "subscribe",
            json!({"channel": "optin:1", "join_leave": true}),
        )
        .await;
    assert!(join_of(&watcher.next_push().await).is_object());
    silent
        .call("subscribe", json!({"channel": "optin:1"}))
        .await;
    let push = watcher.next_push().await;
    assert_eq!(join_of(&push)["info"]["user"], "s");
    silent.expect_no_push(QUIET).await;
}

#[tokio::test]
async fn opt_in_without_presence_permission_gets_nothing() {
    let s = server();
    let (mut a, _) = connect(&s, "1").await;
    let (mut b, _) = connect(&s, "2").await;
    a.call(
        "subscribe",
        json!({"channel": "noperm:1", "join_leave": true}),
    )
    .await;
    b.call(
        "subscribe",
        json!({"channel": "noperm:1", "join_leave": true}),
    )
    .await;
    a.expect_no_push(QUIET).await;
    b.expect_no_push(Duration::from_millis(50)).await;
    // Presence is still kept.
    assert_eq!(s.presence("noperm:1").await.len(), 2);
}

#[tokio::test]
async fn namespace_without_join_leave_emits_nothing() {
    let s = server();
    let (mut a, _) = connect(&s, "1").await;
    let (mut b, _) = connect(&s, "2").await;
    a.call("subscribe", json!({"channel": "quiet:1"})).await;
    b.call("subscribe", json!({"channel": "quiet:1"})).await;
    b.call("unsubscribe", json!({"channel": "quiet:1"})).await;
    a.expect_no_push(QUIET).await;
}

#[tokio::test]
async fn token_override_turns_join_leave_on() {
    let s = server();
    let (mut a, _) = connect(&s, "1").await;
    let (mut b, _) = connect(&s, "2").await;
    a.call("subscribe", json!({"channel": "quiet:o"})).await;
    let sub = token(json!({"sub": "2", "channel": "quiet:o",
        "override": {"join_leave": {"value": true}}}));
    b.call("subscribe", json!({"channel": "quiet:o", "token": sub}))
        .await;
    let push = a.next_push().await;
    assert_eq!(join_of(&push)["info"]["user"], "2");
}

#[tokio::test]
async fn server_side_subscriptions_get_pushes_at_client_level() {
    let s = server();
    let t = token(json!({"sub": "1", "channels": ["chat:srv"]}));
    let (mut a, result) = Client::connect(&s.ws_url(), &t).await;
    assert_eq!(result["subs"], json!({"chat:srv": {}}));
    let a_id = result["client"].as_str().unwrap().to_string();
    // Own join after the connect reply.
    let own = a.next_push().await;
    assert_eq!(own["channel"], "chat:srv");
    assert_eq!(join_of(&own)["info"]["client"], a_id.as_str());
    // Server-side subscriptions count as subscriptions for presence permission.
    let reply = a.call("presence", json!({"channel": "chat:srv"})).await;
    assert_eq!(reply["presence"]["presence"].as_object().unwrap().len(), 1);

    let (mut b, b_id) = connect(&s, "2").await;
    b.call("subscribe", json!({"channel": "chat:srv"})).await;
    assert_eq!(
        join_of(&a.next_push().await)["info"]["client"],
        b_id.as_str()
    );
    b.close().await;
    assert_eq!(
        leave_of(&a.next_push().await)["info"]["client"],
        b_id.as_str()
    );

    // subs (with info) wins over channels.
    let t = token(json!({"sub": "3", "channels": ["chat:x"],
        "subs": {"chat:srv": {"info": {"seat": 4}}}}));
    let (_c, result) = Client::connect(&s.ws_url(), &t).await;
    assert_eq!(result["subs"], json!({"chat:srv": {}}));
    let push = a.next_push().await;
    assert_eq!(join_of(&push)["info"]["chan_info"], json!({"seat": 4}));
}

#[tokio::test]
async fn each_join_is_followed_by_its_leave_never_duplicated() {
    let s = server();
    let (mut watcher, _) = connect(&s, "w").await;
    watcher
        .call("subscribe", json!({"channel": "chat:dup"}))
        .await;
    watcher.next_push().await;
    let (mut c, c_id) = connect(&s, "c").await;
    for _ in 0..20 {
        c.call("subscribe", json!({"channel": "chat:dup"})).await;
        c.call("unsubscribe", json!({"channel": "chat:dup"})).await;
    }
    for i in 0..40 {
        let push = watcher.next_push().await;
        let kind = if i % 2 == 0 { "join" } else { "leave" };
        assert_eq!(
            push[kind]["info"]["client"],
            c_id.as_str(),
            "push {i}: {push}"
        );
    }
    watcher.expect_no_push(QUIET).await;
}
