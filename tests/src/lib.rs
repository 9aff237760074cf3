//! Shared helpers for black-box tests: start the real `rollcall` binary, speak real WebSocket
//! and HTTP to it, sign tokens. Every wait is bounded and fails with a clear message.

pub mod nats;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The API key every test config uses.
pub const API_KEY: &str = "test-api-key";
/// The HMAC secret every test config uses for connection and subscription tokens.
pub const SECRET: &str = "test-token-secret";

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(5);

/// The `rollcall` binary under test: `$ROLLCALL_BIN`, else `target/debug/rollcall`.
pub fn rollcall_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ROLLCALL_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/rollcall");
    assert!(
        p.exists(),
        "{} does not exist: build it first with `cargo build -p rollcall` (make test does)",
        p.display()
    );
    p
}

/// A base config for tests: API key, token secret, and the `chat` namespace of `make run`,
/// to be adjusted with [`merge`].
pub fn base_config() -> Value {
    json!({
        "http_server": {"address": "127.0.0.1", "port": 0},
        "http_api": {"key": API_KEY},
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "allow_anonymous_connect_without_token": false
        },
        "channel": {
            "namespaces": [
                {"name": "chat", "presence": true, "join_leave": true,
                 "force_push_join_leave": true, "allow_subscribe_for_client": true,
                 "allow_presence_for_subscriber": true}
            ]
        },
        "shutdown": {"timeout": "5s"},
        "log": {"level": "info"}
    })
}

/// Merges `patch` into `base` (objects recursively; anything else replaces).
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// A running `rollcall serve` process, killed on drop.
pub struct ServerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `rollcall serve` with `config` (JSON, written to a temp file) and extra env.
    /// Waits until it logs the address it listens on.
    pub fn start(config: &Value) -> ServerProcess {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &Value, env: &[(&str, &str)]) -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config, env)
    }

    /// Starts in an existing directory (which holds e.g. a namespaces file).
    pub fn start_in(dir: tempfile::TempDir, config: &Value, env: &[(&str, &str)]) -> ServerProcess {
        let path = dir.path().join("rollcall.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let mut cmd = Command::new(rollcall_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            // Test plumbing, not a config override (it would be warned about).
            .env_remove("ROLLCALL_BIN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn rollcall serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = parse_listening(&line)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "rollcall serve did not report a listening address within 20s; its log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        ServerProcess {
            child: Some(child),
            addr,
            log,
            dir,
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Calls `POST /api/<method>` with the test API key; returns (status, JSON body or Null).
    pub async fn api(&self, method: &str, params: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.http(&format!("/api/{method}")))
            .header("X-API-Key", API_KEY)
            .json(&params)
            .send()
            .await
            .expect("API request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `presence` through the API: the map of client id → info.
    pub async fn presence(&self, channel: &str) -> serde_json::Map<String, Value> {
        let (status, body) = self.api("presence", json!({"channel": channel})).await;
        assert_eq!(status, 200, "presence status; body {body}");
        body["result"]["presence"]
            .as_object()
            .unwrap_or_else(|| panic!("presence result missing: {body}"))
            .clone()
    }

    /// Waits until `GET /ready` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = reqwest::get(self.http("/ready")).await
                && r.status().as_u16() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not ready within {within:?}; log:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, failing after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rollcall did not exit within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse_listening(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + 5..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Signs an HS256 JWT with the test secret.
pub fn token(claims: Value) -> String {
    sign(SECRET, claims)
}

/// Signs an HS256 JWT with `secret`.
pub fn sign(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("hmac key"),
    )
    .expect("sign token")
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What a client saw besides replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A push (`{"push":{…}}`), the inner object.
    Push(Value),
    /// A server ping (`{}`).
    Ping,
    /// The connection closed with this code and reason.
    Closed(u16, String),
}

/// A raw protocol client over a real WebSocket. Replies are matched by id; pushes and pings
/// are queued as events.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u32,
    events: std::collections::VecDeque<Event>,
    replies: std::collections::HashMap<u64, Value>,
    closed: bool,
}

impl Client {
    /// Opens a WebSocket (no connect command yet).
    pub async fn open(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket open timed out")
            .expect("websocket open");
        Client {
            ws,
            next_id: 0,
            events: Default::default(),
            replies: Default::default(),
            closed: false,
        }
    }

    /// Opens and connects with `token`; panics unless the reply is a connect result.
    pub async fn connect(url: &str, token: &str) -> (Client, Value) {
        let mut c = Client::open(url).await;
        let reply = c.call("connect", json!({"token": token})).await;
        assert!(reply.get("connect").is_some(), "connect failed: {reply}");
        let result = reply["connect"].clone();
        (c, result)
    }

    /// Sends raw text as one frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("websocket send");
    }

    /// Sends raw bytes as one frame (binary).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("websocket send");
    }

    /// Sends a command and returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> u32 {
        self.next_id += 1;
        let id = self.next_id;
        let cmd = json!({"id": id, method: params});
        self.send_text(&cmd.to_string()).await;
        id
    }

    /// Sends a command and waits for its reply (the whole reply object).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        self.reply(id).await
    }

    /// Waits for the reply with `id`.
    pub async fn reply(&mut self, id: u32) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(r) = self.replies.remove(&(id as u64)) {
                return r;
            }
            assert!(
                self.read_until(deadline).await,
                "no reply to command {id} within {WAIT:?}; events so far: {:?}",
                self.events
            );
        }
    }

    /// Reads one frame (or times out at `deadline`). Returns false on timeout or close.
    async fn read_until(&mut self, deadline: tokio::time::Instant) -> bool {
        if self.closed {
            return false;
        }
        let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
            Err(_) => return false,
            Ok(m) => m,
        };
        match msg {
            Some(Ok(Message::Text(text))) => {
                for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
                    let v: Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("server sent invalid JSON {line:?}: {e}"));
                    if let Some(id) = v.get("id").and_then(Value::as_u64) {
                        self.replies.insert(id, v);
                    } else if let Some(push) = v.get("push") {
                        self.events.push_back(Event::Push(push.clone()));
                    } else if v == json!({}) {
                        self.events.push_back(Event::Ping);
                    } else {
                        panic!("unexpected message from server: {v}");
                    }
                }
                true
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((u16::from(CloseCode::Status), String::new()));
                self.events.push_back(Event::Closed(code, reason));
                self.closed = true;
                true
            }
            Some(Ok(_)) => true,
            Some(Err(_)) | None => {
                self.events
                    .push_back(Event::Closed(1006, "abnormal".into()));
                self.closed = true;
                true
            }
        }
    }

    /// The next event within `within`, or None.
    pub async fn next_event(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if !self.read_until(deadline).await {
                return self.events.pop_front();
            }
        }
    }

    /// The next push, skipping pings; panics if none arrives within [`WAIT`].
    pub async fn next_push(&mut self) -> Value {
        loop {
            match self.next_event(WAIT).await {
                Some(Event::Push(p)) => return p,
                Some(Event::Ping) => continue,
                other => panic!("expected a push, got {other:?}"),
            }
        }
    }

    /// Asserts that no push arrives within `within` (pings are ignored).
    pub async fn expect_no_push(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next_event(left).await {
                None => return,
                Some(Event::Ping) => continue,
                Some(other) => panic!("expected no push, got {other:?}"),
            }
        }
    }

    /// Waits for the close frame and returns (code, reason), skipping pushes and pings.
    pub async fn expect_close(&mut self, within: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Event::Closed(code, reason)) => return (code, reason),
                Some(_) => continue,
                None => panic!("connection not closed within {within:?}"),
            }
        }
    }

    /// Sends a pong (`{}`).
    pub async fn pong(&mut self) {
        self.send_text("{}").await;
    }

    /// Closes the socket from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
