//! Baseline servers, each run as a subcommand of this binary in its own process (like the
//! server it is compared with) on the port in `$BENCH_PORT`, with tokio's default runtime.
//!
//! - `static-serve`: axum answering `POST /api/<name>` with the bytes of `<dir>/<name>`, after
//!   reading the request body, the same work as rollcall's API minus the presence lookup.
//! - `ws-serve`: an axum WebSocket endpoint with rollcall's buffer settings that echoes text
//!   frames: the floor of what one idle connection costs on this stack.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

fn port() -> anyhow::Result<u16> {
    std::env::var("BENCH_PORT")
        .context("BENCH_PORT is not set")?
        .parse()
        .context("BENCH_PORT is not a port")
}

fn serve(app: Router) -> anyhow::Result<()> {
    let port = port()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            axum::serve(listener, app).await?;
            anyhow::Ok(())
        })
}

/// Serves every file of `dir` at `POST /api/<file name>`.
pub fn static_serve(dir: &Path) -> anyhow::Result<()> {
    let mut bodies = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        bodies.insert(name, Bytes::from(std::fs::read(entry.path())?));
    }
    let app = Router::new()
        .route("/api/{name}", post(static_body))
        .route("/health", get(|| async { "{}" }))
        .with_state(Arc::new(bodies));
    serve(app)
}

async fn static_body(
    State(bodies): State<Arc<HashMap<String, Bytes>>>,
    UrlPath(name): UrlPath<String>,
    _request: Bytes,
) -> Response {
    match bodies.get(&name) {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Echoes WebSocket text frames at `/connection/websocket`.
pub fn ws_serve() -> anyhow::Result<()> {
    let app = Router::new()
        .route("/connection/websocket", any(upgrade))
        .route("/health", get(|| async { "{}" }));
    serve(app)
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if let Message::Text(t) = msg
            && socket.send(Message::Text(t)).await.is_err()
        {
            return;
        }
    }
}
