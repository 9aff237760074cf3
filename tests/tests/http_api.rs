//! The server HTTP API and the health/ready/metrics endpoints against the real binary.

use rollcall_tests::*;
use serde_json::{Value, json};

fn server_with(patch: Value) -> ServerProcess {
    let mut config = base_config();
    merge(&mut config, &patch);
    merge(
        &mut config,
        &json!({"channel": {"namespaces": [
            {"name": "chat", "presence": true, "join_leave": true, "force_push_join_leave": true,
             "allow_subscribe_for_client": true, "allow_presence_for_subscriber": true},
            {"name": "nopres", "allow_subscribe_for_client": true}
        ]}}),
    );
    ServerProcess::start(&config)
}

async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut req = reqwest::Client::new().post(url).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

const KEY: (&str, &str) = ("X-API-Key", API_KEY);

#[tokio::test]
async fn presence_stats_info_channels() {
    let s = server_with(json!({}));
    let t1 = token(json!({"sub": "42", "info": {"name": "Ann"}}));
    let (mut a, ra) = Client::connect(&s.ws_url(), &t1).await;
    let (mut b, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "42"}))).await;
    let (mut c, _) = Client::connect(&s.ws_url(), &token(json!({"sub": ""}))).await;
    let sub = token(json!({"sub": "42", "channel": "chat:1", "info": {"seat": 1}}));
    a.call("subscribe", json!({"channel": "chat:1", "token": sub}))
        .await;
    b.call("subscribe", json!({"channel": "chat:1"})).await;
    b.call("subscribe", json!({"channel": "chat:2"})).await;
    // Anonymous (sub "") via token: counts as one user "".
    c.call(
        "subscribe",
        json!({"channel": "$chat:x", "token": token(json!({"sub": "", "channel": "$chat:x"}))}),
    )
    .await;

    let (status, body) = s.api("presence", json!({"channel": "chat:1"})).await;
    assert_eq!(status, 200);
    let presence = body["result"]["presence"].as_object().unwrap();
    assert_eq!(presence.len(), 2);
    let a_id = ra["client"].as_str().unwrap();
    assert_eq!(
        presence[a_id],
        json!({"client": a_id, "user": "42", "conn_info": {"name": "Ann"}, "chan_info": {"seat": 1}})
    );
    let (_, body) = s.api("presence_stats", json!({"channel": "chat:1"})).await;
    assert_eq!(body, json!({"result": {"num_clients": 2, "num_users": 1}}));
    let (_, body) = s.api("presence", json!({"channel": "$chat:x"})).await;
    let entry = body["result"]["presence"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(entry["user"], "");
    // Empty channel: an empty map, not null.
    let (_, body) = s.api("presence", json!({"channel": "chat:none"})).await;
    assert_eq!(body, json!({"result": {"presence": {}}}));

    let (_, body) = s.api("info", json!({})).await;
    let nodes = body["result"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n["num_clients"], 3);
    assert_eq!(n["num_users"], 2);
    assert_eq!(n["num_subs"], 4);
    assert_eq!(n["num_channels"], 3);
    for key in ["uid", "name", "version"] {
        assert!(n[key].is_string(), "{key} in {n}");
    }
    assert!(n["uptime"].is_u64());

    let (_, body) = s.api("channels", json!({"pattern": "chat:*"})).await;
    assert_eq!(
        body,
        json!({"result": {"channels": {"chat:1": {"num_clients": 2}, "chat:2": {"num_clients": 1}}}})
    );
    let (_, body) = s.api("channels", json!({})).await;
    assert_eq!(body["result"]["channels"].as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn errors_in_body_mode_and_transport_mode() {
    let s = server_with(json!({}));
    for (params, code) in [
        (json!({"channel": ""}), 107),
        (json!({}), 107),
        (json!({"channel": "zz:1"}), 102),
        (json!({"channel": "nopres:1"}), 108),
    ] {
        let (status, body) = s.api("presence", params.clone()).await;
        assert_eq!(status, 200, "{params}");
        assert_eq!(body["error"]["code"], code, "{params}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (status, body) = s.api("nosuch", json!({})).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (200, Some(104)));

    // Transport mode by header.
    let url = s.http("/api/presence");
    let mode = ("X-Centrifugo-Error-Mode", "transport");
    let (status, body) = post(&url, &[KEY, mode], r#"{"channel":"nopres:1"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"code": 108, "message": "not available"})
    );
    let (status, _) = post(&url, &[KEY, mode], r#"{"channel":"zz:1"}"#).await;
    assert_eq!(status, 404);
    let (status, _) = post(&url, &[KEY, mode], r#"{"channel":""}"#).await;
    assert_eq!(status, 400);
    let (status, _) = post(&s.http("/api/nosuch"), &[KEY, mode], "{}").await;
    assert_eq!(status, 404);

    // Transport mode by config.
    let s = server_with(json!({"http_api": {"error_mode": "transport"}}));
    let (status, body) = s.api("presence", json!({"channel": "zz:1"})).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(102)));
}

#[tokio::test]
async fn api_key_forms_and_auth_failures() {
    let s = server_with(json!({}));
    let url = s.http("/api/info");
    assert_eq!(post(&url, &[KEY], "{}").await.0, 200);
    let bearer = format!("apikey {API_KEY}");
    assert_eq!(post(&url, &[("Authorization", &bearer)], "{}").await.0, 200);
    let q = format!("{url}?api_key={API_KEY}");
    assert_eq!(post(&q, &[], "{}").await.0, 200);
    let (status, body) = post(&url, &[("X-API-Key", "wrong")], "{}").await;
    assert_eq!((status, body.as_str()), (401, ""));
    assert_eq!(post(&url, &[], "{}").await.0, 401);
    assert_eq!(
        post(&url, &[("Authorization", "Bearer x")], "{}").await.0,
        401
    );

    // Insecure API needs no key.
    let s = server_with(json!({"http_api": {"insecure": true}}));
    assert_eq!(post(&s.http("/api/info"), &[], "{}").await.0, 200);
}

#[tokio::test]
async fn methods_bodies_and_content_type() {
    let s = server_with(json!({}));
    let resp = reqwest::get(s.http("/api/info")).await.unwrap();
    assert_eq!(resp.status(), 405);
    let (status, _) = post(&s.http("/api/presence"), &[KEY], "{not json").await;
    assert_eq!(status, 400);
    let resp = reqwest::Client::new()
        .post(s.http("/api/info"))
        .header("X-API-Key", API_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn batch() {
    let s = server_with(json!({}));
    let (mut a, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "1"}))).await;
    a.call("subscribe", json!({"channel": "chat:b"})).await;
    let (status, body) = s
        .api(
            "batch",
            json!({"commands": [
                {"presence_stats": {"channel": "chat:b"}},
                {"presence": {"channel": "zz:1"}},
                {"info": {}}
            ], "parallel": true}),
        )
        .await;
    assert_eq!(status, 200);
    let replies = body["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 3);
    assert_eq!(
        replies[0],
        json!({"presence_stats": {"num_clients": 1, "num_users": 1}})
    );
    assert_eq!(replies[1]["error"]["code"], 102);
    assert_eq!(replies[2]["info"]["nodes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn legacy_single_endpoint() {
    let s = server_with(json!({}));
    let (mut a, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "1"}))).await;
    a.call("subscribe", json!({"channel": "chat:l"})).await;
    let body = [
        r#"{"id":7,"method":"presence_stats","params":{"channel":"chat:l"}}"#,
        r#"{"method":"PRESENCE","params":{"channel":"chat:l"}}"#,
        r#"{"id":9,"method":5,"params":{"channel":"zz:1"}}"#,
        r#"{"id":10,"method":9,"params":{}}"#,
        r#"{"id":11,"method":"publish","params":{}}"#,
    ]
    .join("\n");
    let (status, text) = post(&s.http("/api"), &[KEY], &body).await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0],
        json!({"id": 7, "result": {"num_clients": 1, "num_users": 1}})
    );
    assert!(lines[1].get("id").is_none());
    assert_eq!(lines[1]["result"]["presence"].as_object().unwrap().len(), 1);
    assert_eq!(lines[2]["error"]["code"], 102);
    assert_eq!(lines[3]["result"]["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(lines[4]["error"]["code"], 104);
    assert_eq!(post(&s.http("/api"), &[], &body).await.0, 401);
    assert_eq!(post(&s.http("/api"), &[KEY], "garbage").await.0, 400);
}

#[tokio::test]
async fn health_ready_metrics() {
    let s = server_with(json!({}));
    let resp = reqwest::get(s.http("/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    assert_eq!(reqwest::get(s.http("/ready")).await.unwrap().status(), 200);
    let (mut a, _) = Client::connect(&s.ws_url(), &token(json!({"sub": "1"}))).await;
    a.call("subscribe", json!({"channel": "chat:m"})).await;
    s.api("presence", json!({"channel": "chat:m"})).await;
    let text = reqwest::get(s.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "rollcall_connections 1",
        "rollcall_subscriptions 1",
        "rollcall_presence_entries 1",
        r#"rollcall_client_commands_total{method="subscribe",result="ok"} 1"#,
        r#"rollcall_api_calls_total{method="presence",result="ok"} 1"#,
        r#"rollcall_join_leave_total{kind="join",cause="subscribe"} 1"#,
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
}
