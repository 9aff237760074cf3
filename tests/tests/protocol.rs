//! Client protocol over a real WebSocket against the real binary: commands, errors, close codes.

use std::time::Duration;

use rollcall_tests::*;
use serde_json::{Value, json};

fn server_with(patch: Value) -> ServerProcess {
    let mut config = base_config();
    merge(&mut config, &patch);
    ServerProcess::start(&config)
}

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

fn error_code(reply: &Value) -> u64 {
    reply["error"]["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("expected an error reply, got {reply}"))
}

#[tokio::test]
async fn connect_reply_has_centrifugo_shape() {
    let s = server_with(json!({}));
    let (_c, result) = Client::connect(&s.ws_url(), &user_token("42")).await;
    let client = result["client"].as_str().unwrap();
    assert_eq!(client.len(), 36, "client id is a UUID: {client}");
    assert!(result["version"].is_string());
    assert_eq!(result["ping"], 25);
    assert_eq!(result["pong"], true);
    assert_eq!(result["expires"], true);
    let ttl = result["ttl"].as_u64().unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn token_without_exp_does_not_expire() {
    let s = server_with(json!({}));
    let (_c, result) = Client::connect(&s.ws_url(), &token(json!({"sub": "1"}))).await;
    assert!(result.get("expires").is_none(), "{result}");
    assert!(result.get("ttl").is_none(), "{result}");
}

#[tokio::test]
async fn first_command_must_be_connect() {
    let s = server_with(json!({}));
    let mut c = Client::open(&s.ws_url()).await;
    c.send("subscribe", json!({"channel": "chat:1"})).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3501);
}

#[tokio::test]
async fn second_connect_is_a_bad_request() {
    let s = server_with(json!({}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    c.send("connect", json!({"token": user_token("1")})).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3501);
}

#[tokio::test]
async fn missing_token_is_refused_unless_anonymous_allowed() {
    let s = server_with(json!({}));
    let mut c = Client::open(&s.ws_url()).await;
    c.send("connect", json!({})).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3501);

    let s = server_with(json!({"client": {"allow_anonymous_connect_without_token": true}}));
    let (mut c, result) = Client::connect(&s.ws_url(), "").await;
    assert!(result["client"].is_string());
    // Anonymous users may not subscribe to chat (allow_subscribe_for_anonymous is off).
    let reply = c.call("subscribe", json!({"channel": "chat:1"})).await;
    assert_eq!(error_code(&reply), 103);
}

#[tokio::test]
async fn forged_tokens_close_with_3500() {
    let s = server_with(json!({}));
    let forged = sign("another-secret", json!({"sub": "1"}));
    let mut c = Client::open(&s.ws_url()).await;
    c.send("connect", json!({"token": forged})).await;
    assert_eq!(c.expect_close(WAIT).await, (3500, "invalid token".into()));

    // alg "none": header {"alg":"none","typ":"JWT"}, payload {"sub":"1"}, empty signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.";
    let mut c = Client::open(&s.ws_url()).await;
    c.send("connect", json!({"token": none})).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3500);

    let mut c = Client::open(&s.ws_url()).await;
    c.send("connect", json!({"token": "not-a-jwt"})).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3500);
}

#[tokio::test]
async fn expired_token_is_error_109_and_connection_stays() {
    let s = server_with(json!({}));
    let mut c = Client::open(&s.ws_url()).await;
    let expired = token(json!({"sub": "1", "exp": now() - 10}));
    let reply = c.call("connect", json!({"token": expired})).await;
    assert_eq!(error_code(&reply), 109);
    // The SDK refreshes and connects again on the same socket.
    let reply = c.call("connect", json!({"token": user_token("1")})).await;
    assert!(reply.get("connect").is_some(), "{reply}");
}

#[tokio::test]
async fn subscribe_errors() {
    let s = server_with(json!({
        "client": {"channel_limit": 2},
        "channel": {"namespaces": [
            {"name": "chat", "presence": true, "allow_subscribe_for_client": true},
            {"name": "closed", "presence": true},
            {"name": "rx", "allow_subscribe_for_client": true, "channel_regex": "^[a-z]+$"}
        ]}
    }));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    assert!(
        c.call("subscribe", json!({"channel": "chat:1"}))
            .await
            .get("subscribe")
            .is_some()
    );
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "chat:1"})).await),
        105
    );
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "nope:1"})).await),
        102
    );
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": ""})).await),
        107
    );
    let long = format!("chat:{}", "x".repeat(300));
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": long})).await),
        107
    );
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "closed:1"})).await),
        103
    );
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "rx:ABC"})).await),
        107
    );
    assert!(
        c.call("subscribe", json!({"channel": "rx:abc"}))
            .await
            .get("subscribe")
            .is_some()
    );
    // Two subscriptions held: the limit is reached.
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "chat:3"})).await),
        106
    );
    // Errors never close the connection.
    assert!(
        c.call("unsubscribe", json!({"channel": "chat:1"}))
            .await
            .get("unsubscribe")
            .is_some()
    );
    assert!(
        c.call("subscribe", json!({"channel": "chat:3"}))
            .await
            .get("subscribe")
            .is_some()
    );
}

#[tokio::test]
async fn private_and_user_limited_channels() {
    let s = server_with(json!({}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("42")).await;
    // $ channels need a subscription token even where the namespace is open.
    assert_eq!(
        error_code(
            &c.call("subscribe", json!({"channel": "$chat:secret"}))
                .await
        ),
        103
    );
    let sub_token = token(json!({"sub": "42", "channel": "$chat:secret", "exp": now() + 60}));
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "$chat:secret", "token": sub_token}),
        )
        .await;
    assert_eq!(reply["subscribe"]["expires"], true, "{reply}");
    // A token for another channel is an invalid token.
    let wrong = token(json!({"sub": "42", "channel": "$chat:other"}));
    c.send("subscribe", json!({"channel": "$chat:x", "token": wrong}))
        .await;
    assert_eq!(c.expect_close(WAIT).await.0, 3500);

    // User-limited channels in a closed namespace: listed users only.
    let s = server_with(json!({"channel": {"namespaces": [{"name": "dm", "presence": true}]}}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("42")).await;
    assert!(
        c.call("subscribe", json!({"channel": "dm:talk#42,43"}))
            .await
            .get("subscribe")
            .is_some()
    );
    assert_eq!(
        error_code(
            &c.call("subscribe", json!({"channel": "dm:talk#41,43"}))
                .await
        ),
        103
    );
}

#[tokio::test]
async fn subscription_token_errors() {
    let s = server_with(json!({"channel": {"namespaces": [{"name": "closed", "presence": true}]}}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("42")).await;
    let expired = token(json!({"sub": "42", "channel": "closed:1", "exp": now() - 5}));
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "closed:1", "token": expired}),
        )
        .await;
    assert_eq!(error_code(&reply), 109);
    let ok = token(json!({"sub": "42", "channel": "closed:1", "info": {"role": "mod"}}));
    assert!(
        c.call("subscribe", json!({"channel": "closed:1", "token": ok}))
            .await
            .get("subscribe")
            .is_some()
    );
    let presence = s.presence("closed:1").await;
    let entry = presence.values().next().expect("one member");
    assert_eq!(entry["chan_info"], json!({"role": "mod"}));
    // A token for another user closes with 3500.
    let other = token(json!({"sub": "7", "channel": "closed:2"}));
    c.send("subscribe", json!({"channel": "closed:2", "token": other}))
        .await;
    assert_eq!(c.expect_close(WAIT).await.0, 3500);
}

#[tokio::test]
async fn client_presence_and_stats() {
    let s = server_with(json!({"channel": {"namespaces": [
        {"name": "chat", "presence": true, "allow_subscribe_for_client": true,
         "allow_presence_for_subscriber": true},
        {"name": "open", "presence": true, "allow_presence_for_client": true},
        {"name": "nopres", "allow_subscribe_for_client": true, "allow_presence_for_client": true}
    ]}}));
    let t = token(json!({"sub": "42", "info": {"name": "Ann"}}));
    let (mut a, connect) = Client::connect(&s.ws_url(), &t).await;
    let (mut b, _) = Client::connect(&s.ws_url(), &user_token("43")).await;
    // Not subscribed yet: no permission as a subscriber.
    assert_eq!(
        error_code(&a.call("presence", json!({"channel": "chat:1"})).await),
        103
    );
    a.call("subscribe", json!({"channel": "chat:1"})).await;
    b.call("subscribe", json!({"channel": "chat:1"})).await;
    let reply = a.call("presence", json!({"channel": "chat:1"})).await;
    let presence = reply["presence"]["presence"].as_object().unwrap();
    assert_eq!(presence.len(), 2);
    let me = &presence[connect["client"].as_str().unwrap()];
    assert_eq!(me["user"], "42");
    assert_eq!(me["conn_info"], json!({"name": "Ann"}));
    assert!(me.get("chan_info").is_none());
    let reply = a.call("presence_stats", json!({"channel": "chat:1"})).await;
    assert_eq!(
        reply["presence_stats"],
        json!({"num_clients": 2, "num_users": 2})
    );
    // allow_presence_for_client: no subscription needed (empty channel → empty map).
    let reply = a.call("presence", json!({"channel": "open:x"})).await;
    assert_eq!(reply["presence"], json!({"presence": {}}));
    // Presence off → 108; unknown namespace → 102; invalid channel → 107.
    assert_eq!(
        error_code(&a.call("presence", json!({"channel": "nopres:1"})).await),
        108
    );
    assert_eq!(
        error_code(&a.call("presence_stats", json!({"channel": "zz:1"})).await),
        102
    );
    assert_eq!(
        error_code(&a.call("presence", json!({"channel": ""})).await),
        107
    );
}

#[tokio::test]
async fn unsupported_and_unknown_commands() {
    let s = server_with(json!({}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    let reply = c
        .call("publish", json!({"channel": "chat:1", "data": {}}))
        .await;
    assert_eq!(
        reply["error"],
        json!({"code": 104, "message": "method not found"})
    );
    let reply = c.call("ping", json!({})).await;
    assert!(reply.get("error").is_none(), "{reply}");
    c.send_text(r#"{"id":9,"frobnicate":{}}"#).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3501);
}

#[tokio::test]
async fn batched_commands_get_all_replies() {
    let s = server_with(json!({}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    c.send_text(concat!(
        r#"{"id":10,"subscribe":{"channel":"chat:a"}}"#,
        "\n",
        r#"{"id":11,"subscribe":{"channel":"chat:b"}}"#,
        "\n",
        r#"{"id":12,"presence_stats":{"channel":"chat:a"}}"#
    ))
    .await;
    assert!(c.reply(10).await.get("subscribe").is_some());
    assert!(c.reply(11).await.get("subscribe").is_some());
    assert_eq!(
        c.reply(12).await["presence_stats"],
        json!({"num_clients": 1, "num_users": 1})
    );
}

#[tokio::test]
async fn malformed_frames_close_with_3501() {
    let s = server_with(json!({}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    c.send_text("{not json").await;
    assert_eq!(c.expect_close(WAIT).await.0, 3501);

    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    c.send_text(r#"{"id":1,"subscribe":{"channel":5}}"#).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3501);

    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    c.send_binary(vec![0, 1, 2, 3]).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3501);
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let s = server_with(json!({}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    let big = format!(
        r#"{{"id":2,"subscribe":{{"channel":"chat:1","data":"{}"}}}}"#,
        "x".repeat(70 * 1024)
    );
    c.send_text(&big).await;
    assert_eq!(c.expect_close(WAIT).await.0, 1009);
    // The node is fine.
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    assert!(
        c.call("subscribe", json!({"channel": "chat:1"}))
            .await
            .get("subscribe")
            .is_some()
    );
}

#[tokio::test]
async fn ping_pong() {
    let s = server_with(json!({"client": {"ping_interval": "1s", "pong_timeout": "1s"}}));
    let (mut c, result) = Client::connect(&s.ws_url(), &user_token("1")).await;
    assert_eq!(result["ping"], 1);
    // Answer two pings: the connection stays.
    for _ in 0..2 {
        assert_eq!(
            c.next_event(Duration::from_secs(3)).await,
            Some(Event::Ping)
        );
        c.pong().await;
    }
    // Then stop answering: closed with 3012 within ping + pong timeout.
    assert_eq!(
        c.next_event(Duration::from_secs(3)).await,
        Some(Event::Ping)
    );
    assert_eq!(
        c.expect_close(Duration::from_secs(3)).await,
        (3012, "no pong".into())
    );
}

#[tokio::test]
async fn unasked_pong_is_a_bad_request() {
    let s = server_with(json!({}));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    c.pong().await;
    assert_eq!(c.expect_close(WAIT).await.0, 3501);
}

#[tokio::test]
async fn stale_connection_without_connect_closes_with_3502() {
    let s = server_with(json!({}));
    let mut c = Client::open(&s.ws_url()).await;
    assert_eq!(c.expect_close(Duration::from_secs(13)).await.0, 3502);
}

#[tokio::test]
async fn connection_limit_closes_with_3504() {
    let s = server_with(json!({"client": {"connection_limit": 2}}));
    let (_a, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    let (_b, _) = Client::connect(&s.ws_url(), &user_token("2")).await;
    let mut c = Client::open(&s.ws_url()).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3504);
}

#[tokio::test]
async fn too_many_server_side_channels_closes_with_3505() {
    let s = server_with(json!({"client": {"channel_limit": 2}}));
    let t = token(json!({"sub": "1", "channels": ["chat:1", "chat:2", "chat:3"]}));
    let mut c = Client::open(&s.ws_url()).await;
    c.send("connect", json!({"token": t})).await;
    assert_eq!(c.expect_close(WAIT).await.0, 3505);
}

#[tokio::test]
async fn connection_expires_without_refresh_and_refresh_extends_it() {
    let s = server_with(json!({"client": {"expired_close_delay": "1s"}}));
    let short = token(json!({"sub": "1", "exp": now() + 2}));
    let (mut a, result) = Client::connect(&s.ws_url(), &short).await;
    assert_eq!(result["expires"], true);
    let (mut b, _) = Client::connect(&s.ws_url(), &short).await;
    let reply = b
        .call(
            "refresh",
            json!({"token": token(json!({"sub": "1", "exp": now() + 60}))}),
        )
        .await;
    assert_eq!(reply["refresh"]["expires"], true, "{reply}");
    assert!(reply["refresh"]["ttl"].as_u64().unwrap() > 50);
    // Closed only after exp + expired_close_delay (2 s + 1 s), not at exp.
    let t = std::time::Instant::now();
    assert_eq!(a.expect_close(Duration::from_secs(6)).await.0, 3005);
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "closed before the grace: {:?}",
        t.elapsed()
    );
    // b refreshed: still open well after a's expiry.
    let reply = b.call("presence_stats", json!({"channel": "chat:1"})).await;
    assert_eq!(error_code(&reply), 103);
    // Refreshing with another user's token is an invalid token.
    b.send("refresh", json!({"token": user_token("2")})).await;
    assert_eq!(b.expect_close(WAIT).await.0, 3500);
}

#[tokio::test]
async fn origin_is_checked() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = server_with(json!({}));
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");

    let s = server_with(json!({"client": {"allowed_origins": ["https://*.example.com"]}}));
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://app.example.com".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test]
async fn protobuf_is_refused_cleanly() {
    let s = server_with(json!({}));
    let url = format!("{}?format=protobuf", s.ws_url());
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
}

/// 1 000 random garbage frames, before and after connect: every one gets a close or an
/// error, never a crash; the node keeps serving.
#[tokio::test]
async fn garbage_frames_never_crash_the_node() {
    use rand::{Rng, SeedableRng};
    let s = server_with(json!({}));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let samples: [&str; 8] = [
        r#"{"id":1,"subscribe":{"channel":null}}"#,
        r#"{"id":-1,"connect":{}}"#,
        r#"{"id":1,"presence":[]}"#,
        r#"{"id":99999999999,"connect":{}}"#,
        "\n\n\n",
        r#"{"id":1,"connect":{"token":{}}}"#,
        "[]",
        r#"{"id":1,"subscribe":{"channel":"chat:\u0000"}}"#,
    ];
    let mut closed = 0;
    for i in 0..1000 {
        let frame: String = if i % 4 == 0 {
            samples[rng.random_range(0..samples.len())].to_string()
        } else {
            let len = rng.random_range(1..200);
            (0..len)
                .map(|_| rng.random_range(0x20u8..0x7f) as char)
                .collect()
        };
        let (mut c, connected) = if i % 2 == 0 {
            (Client::open(&s.ws_url()).await, false)
        } else {
            let (c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
            (c, true)
        };
        c.send_text(&frame).await;
        // Either the server closes (bad request) or the connection still answers.
        match c.next_event(Duration::from_millis(300)).await {
            Some(Event::Closed(code, _)) => {
                assert!(
                    [3501, 3502].contains(&code),
                    "frame {frame:?} closed with {code}"
                );
                closed += 1;
            }
            _ if connected => {
                let reply = c.call("presence_stats", json!({"channel": "chat:z"})).await;
                assert!(reply.get("error").is_some() || reply.get("presence_stats").is_some());
            }
            _ => {}
        }
        c.close().await;
    }
    assert!(
        closed > 500,
        "only {closed} garbage frames closed the connection"
    );
    let health = reqwest::get(s.http("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("1")).await;
    assert!(
        c.call("subscribe", json!({"channel": "chat:ok"}))
            .await
            .get("subscribe")
            .is_some()
    );
    assert_eq!(s.presence("chat:ok").await.len(), 1);
}

#[tokio::test]
async fn subscription_expires_after_grace_unless_refreshed() {
    let s = server_with(json!({
        "client": {"expired_sub_close_delay": "1s"},
        "channel": {"namespaces": [{"name": "closed", "presence": true}]}
    }));
    let (mut c, _) = Client::connect(&s.ws_url(), &user_token("42")).await;
    let short = |ch: &str| token(json!({"sub": "42", "channel": ch, "exp": now() + 1}));
    for ch in ["closed:a", "closed:b"] {
        let reply = c
            .call("subscribe", json!({"channel": ch, "token": short(ch)}))
            .await;
        assert_eq!(reply["subscribe"]["expires"], true, "{reply}");
    }
    let fresh = token(json!({"sub": "42", "channel": "closed:b", "exp": now() + 60}));
    let reply = c
        .call(
            "sub_refresh",
            json!({"channel": "closed:b", "token": fresh}),
        )
        .await;
    assert!(
        reply["sub_refresh"]["ttl"].as_u64().unwrap() > 50,
        "{reply}"
    );
    let push = c.next_push().await;
    assert_eq!(push["channel"], "closed:a");
    assert_eq!(push["unsubscribe"]["code"], 2501, "{push}");
    assert!(s.presence("closed:a").await.is_empty());
    assert_eq!(s.presence("closed:b").await.len(), 1);
}
