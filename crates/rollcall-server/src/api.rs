//! The server HTTP API: `POST /api/<method>`, `POST /api/batch` and the legacy `POST /api`.
//!
//! No permission checks: whoever holds the API key sees everything.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rollcall_core::codes::{ErrorCode, ProtocolError};
use rollcall_core::presence::{NodeInfo, PresenceStats};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use crate::node::Node;
use crate::transport::{AppState, json_response};

/// How errors are reported (`http_api.error_mode` or header `X-Centrifugo-Error-Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorMode {
    /// HTTP 200 with `{"error":{…}}`.
    Body,
    /// The bare error object with an HTTP status.
    Transport,
}

fn transport_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownChannel | ErrorCode::MethodNotFound => StatusCode::NOT_FOUND,
        ErrorCode::BadRequest | ErrorCode::NotAvailable => StatusCode::BAD_REQUEST,
        ErrorCode::PermissionDenied | ErrorCode::Unauthorized => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The `?api_key=` query parameter.
#[derive(Deserialize)]
pub struct KeyQuery {
    pub api_key: Option<String>,
}

/// Checks the API key: `X-API-Key`, else `Authorization: apikey KEY`, else `?api_key=`.
fn authorized(node: &Node, headers: &HeaderMap, query: &KeyQuery) -> bool {
    let cfg = &node.config().http_api;
    if cfg.insecure {
        return true;
    }
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let auth = headers.get("authorization")?.to_str().ok()?;
            let (scheme, key) = auth.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("apikey")
                .then(|| key.trim().to_owned())
        })
        .or_else(|| query.api_key.clone());
    match given {
        Some(key) if !cfg.key.is_empty() => key.as_bytes().ct_eq(cfg.key.as_bytes()).into(),
        _ => false,
    }
}

fn error_mode(node: &Node, headers: &HeaderMap) -> ErrorMode {
    let header = headers
        .get("x-centrifugo-error-mode")
        .and_then(|v| v.to_str().ok());
    if header == Some("transport") || node.config().http_api.error_mode == "transport" {
        ErrorMode::Transport
    } else {
        ErrorMode::Body
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChannelParams {
    channel: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChannelsParams {
    pattern: String,
}

#[derive(Serialize)]
struct ChannelInfo {
    num_clients: u32,
}

#[derive(Serialize)]
struct ChannelsResult {
    channels: BTreeMap<String, ChannelInfo>,
}

#[derive(Serialize)]
struct InfoResult {
    nodes: Vec<NodeInfo>,
}

/// Runs one API method; `params` is the raw params object. Returns the result as JSON text.
fn call(node: &Node, method: &str, params: &[u8]) -> Result<String, ErrorCode> {
    fn parse<'a, T: Deserialize<'a> + Default>(params: &'a [u8]) -> Result<T, ErrorCode> {
        if params.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(params).map_err(|_| ErrorCode::BadRequest)
    }
    let result = match method {
        "presence" => {
            let p: ChannelParams = parse(params)?;
            presence_allowed(node, &p.channel)?;
            presence_result(node, &p.channel)
        }
        "presence_stats" => {
            let p: ChannelParams = parse(params)?;
            presence_allowed(node, &p.channel)?;
            let stats: PresenceStats = node.engine().presence_stats(&p.channel);
            json(&stats)
        }
        "info" => json(&InfoResult {
            nodes: node.engine().nodes(),
        }),
        "channels" => {
            let p: ChannelsParams = parse(params)?;
            let matcher = if p.pattern.is_empty() {
                None
            } else {
                Some(
                    globset::Glob::new(&p.pattern)
                        .map_err(|_| ErrorCode::BadRequest)?
                        .compile_matcher(),
                )
            };
            let channels = node
                .engine()
                .channels()
                .into_iter()
                .filter(|(c, _)| matcher.as_ref().is_none_or(|m| m.is_match(&**c)))
                .map(|(c, s)| {
                    (
                        c.to_string(),
                        ChannelInfo {
                            num_clients: s.num_clients,
                        },
                    )
                })
                .collect();
            json(&ChannelsResult { channels })
        }
        _ => return Err(ErrorCode::MethodNotFound),
    };
    Ok(result)
}

/// `{"presence":{…}}` from the engine's pre-encoded members.
fn presence_result(node: &Node, channel: &str) -> String {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(br#"{"presence":"#);
    node.engine().presence_json(channel, &mut out);
    out.push(b'}');
    // The engine writes serde_json output and JSON map punctuation: always UTF-8.
    String::from_utf8(out).expect("presence JSON is UTF-8")
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("API results always serialize")
}

/// The checks of `presence` and `presence_stats`: 107 empty/invalid channel, 102 unknown
/// namespace, 108 presence off.
fn presence_allowed(node: &Node, channel: &str) -> Result<(), ErrorCode> {
    if channel.is_empty() {
        return Err(ErrorCode::BadRequest);
    }
    let namespaces = node.namespaces();
    let (_, ns) = namespaces.resolve(channel)?;
    if !ns.options.presence {
        return Err(ErrorCode::NotAvailable);
    }
    Ok(())
}

fn count(node: &Node, method: &str, outcome: &Result<String, ErrorCode>) {
    // Unknown method names are folded into one label so a client cannot grow the metric.
    let method: &'static str = match method {
        "presence" => "presence",
        "presence_stats" => "presence_stats",
        "info" => "info",
        "channels" => "channels",
        "batch" => "batch",
        _ => "unknown",
    };
    let result = match outcome {
        Ok(_) => "ok",
        Err(code) => code.label(),
    };
    node.metrics()
        .api_calls
        .get_or_create(&[("method", method), ("result", result)])
        .inc();
}

fn unauthorized() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r
}

fn bad_json() -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        r#"{"error":"malformed JSON body"}"#,
    )
}

fn error_body(err: &ProtocolError) -> String {
    serde_json::to_string(err).expect("errors always serialize")
}

/// `POST /api/<method>` with the params object as the body.
pub async fn method(
    State(state): State<AppState>,
    Path(method): Path<String>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let node = &state.node;
    if !authorized(node, &headers, &query) {
        return unauthorized();
    }
    let mode = error_mode(node, &headers);
    if !body.iter().all(u8::is_ascii_whitespace)
        && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err()
    {
        return bad_json();
    }
    let outcome = if method == "batch" {
        batch(node, &body)
    } else {
        call(node, &method, &body)
    };
    count(node, &method, &outcome);
    match outcome {
        Ok(result) => json_response(StatusCode::OK, wrap_result(&method, result)),
        Err(code) => match mode {
            ErrorMode::Body => json_response(
                StatusCode::OK,
                format!(r#"{{"error":{}}}"#, error_body(&code.to_error())),
            ),
            ErrorMode::Transport => {
                json_response(transport_status(code), error_body(&code.to_error()))
            }
        },
    }
}

/// Per-method responses wrap the result: `{"result":{…}}`; batch answers `{"replies":[…]}`.
fn wrap_result(method: &str, result: String) -> String {
    if method == "batch" {
        result
    } else {
        format!(r#"{{"result":{result}}}"#)
    }
}

#[derive(Deserialize)]
struct BatchRequest<'a> {
    #[serde(borrow, default)]
    commands: Vec<BTreeMap<String, &'a RawValue>>,
    /// Accepted for compatibility; commands are answered in order either way (each is a
    /// local in-memory read, so running them in parallel would gain nothing).
    #[serde(default)]
    #[allow(dead_code)]
    parallel: bool,
}

/// `POST /api/batch`: `{"commands":[{"presence":{…}},…]}` → `{"replies":[{"presence":{…}},…]}`.
fn batch(node: &Node, body: &[u8]) -> Result<String, ErrorCode> {
    let req: BatchRequest = serde_json::from_slice(body).map_err(|_| ErrorCode::BadRequest)?;
    let mut out = String::from(r#"{"replies":["#);
    for (i, command) in req.commands.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let reply = match command.iter().next() {
            Some((method, params)) if command.len() == 1 => {
                let outcome = call(node, method, params.get().as_bytes());
                count(node, method, &outcome);
                match outcome {
                    Ok(result) => format!(
                        "{{{}:{result}}}",
                        serde_json::to_string(method).unwrap_or_default()
                    ),
                    Err(code) => format!(r#"{{"error":{}}}"#, error_body(&code.to_error())),
                }
            }
            _ => format!(
                r#"{{"error":{}}}"#,
                error_body(&ErrorCode::BadRequest.to_error())
            ),
        };
        out.push_str(&reply);
    }
    out.push_str("]}");
    Ok(out)
}

#[derive(Deserialize)]
struct LegacyCommand<'a> {
    #[serde(default)]
    id: u64,
    #[serde(borrow)]
    method: &'a RawValue,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// The method name of a legacy command: a case-insensitive string or Centrifugo's number.
fn legacy_method(raw: &RawValue) -> String {
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::String(s)) => s.to_ascii_lowercase(),
        Ok(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(4) => "presence".into(),
            Some(5) => "presence_stats".into(),
            Some(9) => "info".into(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// `POST /api`: newline-separated `{"id":7,"method":"presence","params":{…}}` commands; one
/// reply line each, `{"id":7,"result":{…}}` or `{"id":7,"error":{…}}` (`id` omitted when 0).
pub async fn legacy(
    State(state): State<AppState>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let node = &state.node;
    if !authorized(node, &headers, &query) {
        return unauthorized();
    }
    let mut commands = Vec::new();
    for line in rollcall_core::protocol::lines(&body) {
        match serde_json::from_slice::<LegacyCommand>(line) {
            Ok(c) => commands.push(c),
            Err(_) => return bad_json(),
        }
    }
    if commands.is_empty() {
        return bad_json();
    }
    let mut out = String::new();
    for c in &commands {
        let method = legacy_method(c.method);
        let params = c.params.map(|p| p.get().as_bytes()).unwrap_or(b"{}");
        let outcome = if method == "batch" {
            Err(ErrorCode::MethodNotFound)
        } else {
            call(node, &method, params)
        };
        count(node, &method, &outcome);
        if !out.is_empty() {
            out.push('\n');
        }
        out.push('{');
        if c.id != 0 {
            out.push_str(&format!(r#""id":{},"#, c.id));
        }
        match outcome {
            Ok(result) => out.push_str(&format!(r#""result":{result}}}"#)),
            Err(code) => out.push_str(&format!(r#""error":{}}}"#, error_body(&code.to_error()))),
        }
    }
    json_response(StatusCode::OK, out)
}
