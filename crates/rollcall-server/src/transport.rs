//! HTTP and WebSocket transport: the axum router, the upgrade, and each connection's I/O tasks.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use rollcall_core::codes::Disconnect;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::node::{Node, unix_now};
use crate::outbox::{Next, Outbox, OutboxReceiver};
use crate::session::{Flow, Session};

/// Largest WebSocket frame or message accepted: larger ones close with 1009.
pub const MAX_FRAME: usize = 64 * 1024;
/// A connection that sends no `connect` within this time is closed with 3502.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// State of the router: the node plus what connection tasks need to shut down cleanly.
#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// Every route of a server node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/connection/websocket", any(websocket))
        .route("/api", post(api::legacy))
        .route("/api/{method}", post(api::method))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health() -> Response {
    json_response(StatusCode::OK, "{}")
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.node.ready() {
        json_response(StatusCode::OK, "{}")
    } else {
        json_response(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#)
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = crate::metrics::render(state.node.registry());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// A response with a JSON body.
pub fn json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct WsQuery {
    format: Option<String>,
}

async fn websocket(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !state.node.origins().allows(origin) {
        tracing::info!(
            origin = origin.unwrap_or(""),
            "websocket origin not allowed"
        );
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let wants_protobuf = query.format.as_deref() == Some("protobuf")
        || ws
            .requested_protocols()
            .any(|p| p.as_bytes() == b"centrifuge-protobuf");
    if wants_protobuf {
        return (
            StatusCode::BAD_REQUEST,
            "protobuf encoding is not supported yet: use the JSON protocol\n",
        )
            .into_response();
    }
    if !state.node.accepting() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node not ready\n").into_response();
    }
    let cfg = &state.node.config().client;
    let over_limit =
        cfg.connection_limit > 0 && state.node.hub().counts().num_clients >= cfg.connection_limit;
    // Small read/write buffers keep an idle connection's memory low; frames are ≤ 64 KiB.
    ws.read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| {
            let tracker = state.tracker.clone();
            tracker.track_future(run_connection(state, socket, over_limit))
        })
}

/// Drives one connection: a writer task drains the outbox into the socket while this task
/// reads frames, runs the session and its timers.
async fn run_connection(state: AppState, socket: WebSocket, over_limit: bool) {
    let node = state.node.clone();
    let cfg = node.config().client.clone();
    let (outbox, receiver) = Outbox::new(cfg.queue_max_size);
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, receiver));
    if over_limit {
        outbox.close(Disconnect::ConnectionLimit);
        node.metrics()
            .disconnects
            .get_or_create(&[("reason", Disconnect::ConnectionLimit.label())])
            .inc();
        let _ = writer.await;
        return;
    }

    let mut session = Session::new(node.clone(), outbox.clone());
    let stale_at = Instant::now() + STALE_AFTER;
    let mut next_ping = Instant::now() + cfg.ping_interval.0;
    let mut pong_deadline: Option<Instant> = None;
    let mut expiry_check = Instant::now() + Duration::from_secs(1);

    let reason = loop {
        let flow = tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => session.handle_frame(text.as_bytes()),
                Some(Ok(Message::Binary(_))) => Flow::Close(Disconnect::BadRequest),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(e)) => match classify(&e) {
                    Some(reason) => Flow::Close(reason),
                    None => break None,
                },
            },
            requests = outbox.take_control() => {
                session.control(requests);
                Flow::Continue
            }
            _ = outbox.closing() => break outbox.reason(),
            _ = state.shutdown.cancelled() => Flow::Close(Disconnect::Shutdown),
            _ = sleep_until(stale_at), if !session.is_connected() => Flow::Close(Disconnect::Stale),
            _ = sleep_until(next_ping), if session.is_connected() && pong_deadline.is_none() => {
                next_ping += cfg.ping_interval.0;
                pong_deadline = Some(Instant::now() + cfg.pong_timeout.0);
                session.ping()
            }
            _ = sleep_until(pong_deadline.unwrap_or_else(Instant::now)), if pong_deadline.is_some() => {
                if session.awaiting_pong() {
                    Flow::Close(Disconnect::NoPong)
                } else {
                    pong_deadline = None;
                    Flow::Continue
                }
            }
            _ = sleep_until(expiry_check), if session.next_expiry().is_some() => {
                expiry_check = Instant::now() + Duration::from_secs(1);
                session.expire(unix_now())
            }
        };
        if !session.awaiting_pong() {
            pong_deadline = None;
        }
        if let Flow::Close(reason) = flow {
            break Some(reason);
        }
    };
    // Leave presence and push leaves before the close frame goes out, so a client that sees
    // the close also sees itself gone from presence.
    drop(session);
    let label = reason.map(Disconnect::label).unwrap_or("client_closed");
    node.metrics()
        .disconnects
        .get_or_create(&[("reason", label)])
        .inc();
    // Without a reason the peer is gone: the close only stops the writer.
    outbox.close(reason.unwrap_or(Disconnect::Shutdown));
    let _ = writer.await;
}

/// Maps a read error to the close to send, or `None` when the socket is already dead.
fn classify(e: &axum::Error) -> Option<Disconnect> {
    use tungstenite::Error as WsError;
    let inner = std::error::Error::source(e)?.downcast_ref::<WsError>()?;
    match inner {
        WsError::Capacity(_) => Some(Disconnect::MessageTooBig),
        WsError::Utf8(_) | WsError::Protocol(_) => Some(Disconnect::BadRequest),
        _ => None,
    }
}

async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut receiver: OutboxReceiver) {
    let outbox = receiver.outbox();
    loop {
        match receiver.next().await {
            Next::Frame(frame) => {
                // Frames are built from JSON lines, so they are valid UTF-8.
                let text = String::from_utf8(frame).unwrap_or_default();
                let send = sink.send(Message::Text(text.into()));
                tokio::pin!(send);
                let sent = tokio::select! {
                    biased;
                    r = &mut send => r.is_ok(),
                    // The socket is full and the queue overflowed: stop waiting for a reader
                    // that does not read, and try to get the close frame out below.
                    _ = outbox.closing() => match tokio::time::timeout(CLOSE_GRACE, &mut send).await {
                        Ok(r) => r.is_ok(),
                        Err(_) => false,
                    },
                };
                if !sent {
                    outbox.close(Disconnect::InternalError);
                    let reason = outbox.reason().unwrap_or(Disconnect::InternalError);
                    send_close(&mut sink, reason).await;
                    return;
                }
            }
            Next::Close(reason) => {
                send_close(&mut sink, reason).await;
                return;
            }
        }
    }
}

/// How long a close frame may take to leave, e.g. behind a slow reader's buffered data.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

async fn send_close(sink: &mut SplitSink<WebSocket, Message>, reason: Disconnect) {
    let frame = CloseFrame {
        code: reason.code(),
        reason: reason.reason().into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    })
    .await;
}
