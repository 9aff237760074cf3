//! One connected client's protocol state machine: commands in, replies and pushes out.
//!
//! The session owns its subscriptions. It never does I/O itself: replies go into its
//! [`Outbox`], and the transport drives it with frames, timers and control requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use rollcall_core::codes::{Disconnect, ErrorCode, UNSUBSCRIBE_SERVER};
use rollcall_core::namespace::{Namespace, NamespaceOptions};
use rollcall_core::permission::{self, Requester};
use rollcall_core::presence::{Channel, ClientId, ClientInfo};
use rollcall_core::protocol::{
    ChannelRequest, ConnectRequest, ConnectResult, Empty, Method, PushBody, RefreshRequest,
    RefreshResult, Reply, ReplyBody, SubRefreshRequest, SubscribeRequest, SubscribeResult,
    decode_command, encode_push, lines,
};
use rollcall_core::token::{ConnectClaims, Overrides, SubscribeClaims, TokenError};
use serde_json::value::RawValue;

use crate::hub::Subscriber;
use crate::node::{Node, unix_now};
use crate::outbox::{Control, Outbox};
use crate::presence::Entry;

/// Unsubscribe push code when a subscription token expired without refresh.
const UNSUBSCRIBE_EXPIRED: u32 = 2501;

/// What the transport should do after the session handled something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close(Disconnect),
}

/// One subscription held by this session.
struct Sub {
    info: ClientInfo,
    presence: bool,
    join_leave: bool,
    /// Unix seconds when a token-based subscription expires (`sub_refresh` extends it).
    expires_at: Option<u64>,
}

struct Connected {
    user: Arc<str>,
    conn_info: Option<Arc<RawValue>>,
    expires_at: Option<u64>,
}

/// A client's session.
pub struct Session {
    node: Node,
    outbox: Outbox,
    client: ClientId,
    connected: Option<Connected>,
    subs: HashMap<Channel, Sub>,
    awaiting_pong: bool,
}

impl Session {
    pub fn new(node: Node, outbox: Outbox) -> Session {
        node.metrics().connections.inc();
        Session {
            node,
            outbox,
            client: uuid::Uuid::new_v4().to_string().into(),
            connected: None,
            subs: HashMap::new(),
            awaiting_pong: false,
        }
    }

    pub fn client(&self) -> &ClientId {
        &self.client
    }

    pub fn is_connected(&self) -> bool {
        self.connected.is_some()
    }

    /// The earliest unix second at which a connection or subscription expires, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        let conn = self.connected.as_ref().and_then(|c| c.expires_at);
        let subs = self.subs.values().filter_map(|s| s.expires_at).min();
        match (conn, subs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles one text frame: each `\n`-separated command in order. Stops at the first
    /// command that closes the connection.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Flow {
        for line in lines(frame) {
            let flow = match decode_command(line) {
                Ok((id, method)) => self.handle(id, method),
                Err(_) => Flow::Close(Disconnect::BadRequest),
            };
            if let Flow::Close(_) = flow {
                return flow;
            }
        }
        Flow::Continue
    }

    fn handle(&mut self, id: u32, method: Method) -> Flow {
        let label = method.label();
        if self.connected.is_none() && !matches!(method, Method::Connect(_)) {
            return Flow::Close(Disconnect::BadRequest);
        }
        let outcome = match method {
            Method::Connect(req) => self.connect(id, req),
            Method::Subscribe(req) => self.subscribe(id, req),
            Method::Unsubscribe(req) => self.unsubscribe(id, req),
            Method::Presence(req) => self.presence(id, req),
            Method::PresenceStats(req) => self.presence_stats(id, req),
            Method::Refresh(req) => self.refresh(id, req),
            Method::SubRefresh(req) => self.sub_refresh(id, req),
            Method::Ping => {
                self.reply(&Reply {
                    id,
                    body: ReplyBody::Ping(Empty {}),
                });
                Ok(Flow::Continue)
            }
            Method::Unsupported(_) => Err(ErrorCode::MethodNotFound),
            Method::Pong => {
                if !self.awaiting_pong {
                    return Flow::Close(Disconnect::BadRequest);
                }
                self.awaiting_pong = false;
                return Flow::Continue;
            }
        };
        let result = match &outcome {
            Ok(_) => "ok",
            Err(code) => code.label(),
        };
        self.node
            .metrics()
            .commands
            .get_or_create(&[("method", label), ("result", result)])
            .inc();
        match outcome {
            Ok(flow) => flow,
            Err(code) => {
                self.reply(&Reply::error(id, code));
                Flow::Continue
            }
        }
    }

    fn reply(&self, reply: &Reply<'_>) {
        // A failed send means the connection is already closing; nothing else to do.
        let _ = self.outbox.send(Bytes::from(reply.to_bytes()));
    }

    fn requester(&self) -> Requester<'_> {
        Requester {
            user: self.connected.as_ref().map(|c| &*c.user).unwrap_or(""),
            insecure: self.node.config().client.insecure,
        }
    }

    fn connect(&mut self, id: u32, req: ConnectRequest) -> Result<Flow, ErrorCode> {
        if self.connected.is_some() {
            return Ok(Flow::Close(Disconnect::BadRequest));
        }
        let cfg = &self.node.config().client;
        let now = unix_now();
        let claims = if req.token.is_empty() {
            if !(cfg.allow_anonymous_connect_without_token || cfg.insecure) {
                return Ok(Flow::Close(Disconnect::BadRequest));
            }
            Default::default()
        } else {
            match self.conn_token(&req.token, now)? {
                Ok(c) => c,
                Err(close) => return Ok(close),
            }
        };
        if claims.subs.len() > cfg.channel_limit as usize {
            return Ok(Flow::Close(Disconnect::ChannelLimit));
        }
        let user: Arc<str> = claims.user.into();
        self.node.hub().connect(&user);
        self.connected = Some(Connected {
            user: user.clone(),
            conn_info: claims.info.map(Arc::from),
            expires_at: claims.expires_at,
        });

        // Server-side subscriptions: recorded before the reply, joins pushed after it.
        let namespaces = self.node.namespaces();
        let mut joined = Vec::new();
        for (channel, info) in claims.subs {
            let ns = match namespaces.resolve(&channel) {
                Ok((_, ns)) => ns.clone(),
                Err(code) => {
                    tracing::warn!(client = %self.client, %channel, code = code.code(), "server-side subscription skipped");
                    continue;
                }
            };
            let channel: Channel = channel.into();
            let chan_info = info.map(Arc::from);
            let push = ns.options.force_push_join_leave;
            let sub = self.record(
                &channel,
                &ns.options,
                &Overrides::default(),
                chan_info,
                None,
            );
            joined.push((channel, push, sub));
        }
        let ttl = self.ttl_of(self.connected.as_ref().and_then(|c| c.expires_at), now);
        let subs: BTreeMap<&str, SubscribeResult> = joined
            .iter()
            .map(|(c, _, _)| (&**c, SubscribeResult::default()))
            .collect();
        self.reply(&Reply {
            id,
            body: ReplyBody::Connect(ConnectResult {
                client: &self.client,
                version: rollcall_core::VERSION,
                expires: ttl.is_some(),
                ttl: ttl.unwrap_or(0),
                subs,
                ping: self.node.config().client.ping_interval.0.as_secs().max(1) as u32,
                pong: true,
            }),
        });
        for (channel, push, join_leave) in joined {
            self.activate(&channel, push, join_leave);
        }
        Ok(Flow::Continue)
    }

    /// Verifies a connection token. An expired one is error 109 (the SDK refreshes and tries
    /// again); anything else wrong closes with 3500. The verifier checks `exp` and `expire_at`.
    fn conn_token(&self, token: &str, now: u64) -> Result<Result<ConnectClaims, Flow>, ErrorCode> {
        token_outcome(
            self.node.conn_tokens().verify_connect(token, now),
            &self.client,
        )
    }

    /// Verifies a subscription token for `channel`, as [`Self::conn_token`]; a token for
    /// another user or channel also closes with 3500.
    fn sub_token(
        &self,
        token: &str,
        channel: &str,
        now: u64,
    ) -> Result<Result<SubscribeClaims, Flow>, ErrorCode> {
        let verified = self.node.sub_tokens().verify_subscribe(token, now);
        Ok(token_outcome(verified, &self.client)?.and_then(|claims| {
            if claims.user == self.requester().user && claims.channel == channel {
                Ok(claims)
            } else {
                Err(Flow::Close(Disconnect::InvalidToken))
            }
        }))
    }

    fn ttl_of(&self, expires_at: Option<u64>, now: u64) -> Option<u32> {
        expires_at.map(|at| at.saturating_sub(now).max(1) as u32)
    }

    /// Records a subscription in the engine and the session (not yet in the hub). Returns
    /// whether it emits join/leave.
    fn record(
        &mut self,
        channel: &Channel,
        ns: &NamespaceOptions,
        overrides: &Overrides,
        chan_info: Option<Arc<RawValue>>,
        expires_at: Option<u64>,
    ) -> bool {
        let conn = self
            .connected
            .as_ref()
            .expect("recorded only when connected");
        let info = ClientInfo {
            client: self.client.clone(),
            user: conn.user.clone(),
            conn_info: conn.conn_info.clone(),
            chan_info,
        };
        let presence = overrides.presence.unwrap_or(ns.presence);
        let join_leave = overrides.join_leave.unwrap_or(ns.join_leave);
        self.node.engine().add(Entry {
            channel: channel.clone(),
            info: info.clone(),
            presence,
            join_leave,
        });
        let m = self.node.metrics();
        m.subscriptions.inc();
        if presence {
            m.presence_entries.inc();
        }
        self.subs.insert(
            channel.clone(),
            Sub {
                info,
                presence,
                join_leave,
                expires_at,
            },
        );
        join_leave
    }

    /// Registers a recorded subscription in the hub (after its reply was queued) and pushes
    /// its join.
    fn activate(&self, channel: &Channel, push_join_leave: bool, join_leave: bool) {
        self.node.hub().subscribe(
            channel,
            &self.client,
            Subscriber {
                outbox: self.outbox.clone(),
                push_join_leave,
            },
        );
        if join_leave && let Some(sub) = self.subs.get(channel) {
            let d = self.node.hub().broadcast_join(channel, &sub.info);
            self.node.metrics().emitted("join", "subscribe", d);
        }
    }

    /// Removes a subscription everywhere and pushes its leave (to others: the leaver is out of
    /// the hub first).
    fn drop_sub(&mut self, channel: &str, cause: &'static str) -> bool {
        let Some((channel, sub)) = self.subs.remove_entry(channel) else {
            return false;
        };
        self.node.hub().unsubscribe(&channel, &self.client);
        self.node.engine().remove(&channel, &self.client);
        let m = self.node.metrics();
        m.subscriptions.dec();
        if sub.presence {
            m.presence_entries.dec();
        }
        if sub.join_leave {
            let d = self.node.hub().broadcast_leave(&channel, &sub.info);
            m.emitted("leave", cause, d);
        }
        true
    }

    fn subscribe(&mut self, id: u32, req: SubscribeRequest) -> Result<Flow, ErrorCode> {
        let namespaces = self.node.namespaces();
        let (parsed, ns) = namespaces.resolve(&req.channel)?;
        if self.subs.contains_key(req.channel.as_str()) {
            return Err(ErrorCode::AlreadySubscribed);
        }
        if self.subs.len() >= self.node.config().client.channel_limit as usize {
            return Err(ErrorCode::LimitExceeded);
        }
        let now = unix_now();
        let mut overrides = Overrides::default();
        let mut chan_info = None;
        let mut expires_at = None;
        let has_token = !req.token.is_empty();
        if has_token {
            let claims = match self.sub_token(&req.token, &req.channel, now)? {
                Ok(c) => c,
                Err(close) => return Ok(close),
            };
            overrides = claims.overrides;
            chan_info = claims.info.map(Arc::from);
            expires_at = claims.expires_at;
        }
        let who = self.requester();
        if !permission::subscribe(&parsed, &ns.options, who, has_token).allowed() {
            return Err(ErrorCode::PermissionDenied);
        }
        let push = push_join_leave(ns, &overrides, who, req.join_leave);
        let channel: Channel = req.channel.into();
        let join_leave = self.record(&channel, &ns.options, &overrides, chan_info, expires_at);
        let ttl = self.ttl_of(expires_at, now);
        self.reply(&Reply {
            id,
            body: ReplyBody::Subscribe(SubscribeResult {
                expires: ttl.is_some(),
                ttl: ttl.unwrap_or(0),
            }),
        });
        self.activate(&channel, push, join_leave);
        Ok(Flow::Continue)
    }

    fn unsubscribe(&mut self, id: u32, req: ChannelRequest) -> Result<Flow, ErrorCode> {
        if req.channel.is_empty() {
            return Err(ErrorCode::BadRequest);
        }
        // Unsubscribing from a channel one is not subscribed to succeeds, as in Centrifugo.
        self.drop_sub(&req.channel, "unsubscribe");
        self.reply(&Reply {
            id,
            body: ReplyBody::Unsubscribe(Empty {}),
        });
        Ok(Flow::Continue)
    }

    /// The checks shared by `presence` and `presence_stats`: namespace (102), channel (107),
    /// presence on (108), permission (103).
    fn check_presence(&self, channel: &str) -> Result<(), ErrorCode> {
        let namespaces = self.node.namespaces();
        let (_, ns) = namespaces.resolve(channel)?;
        if !ns.options.presence {
            return Err(ErrorCode::NotAvailable);
        }
        let subscribed = self.subs.contains_key(channel);
        if !permission::presence(&ns.options, self.requester(), subscribed) {
            return Err(ErrorCode::PermissionDenied);
        }
        Ok(())
    }

    fn presence(&mut self, id: u32, req: ChannelRequest) -> Result<Flow, ErrorCode> {
        self.check_presence(&req.channel)?;
        // Built from the engine's pre-encoded members rather than serialized per member.
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!(r#"{{"id":{id},"presence":{{"presence":"#).as_bytes());
        self.node.engine().presence_json(&req.channel, &mut out);
        out.extend_from_slice(b"}}");
        let _ = self.outbox.send(Bytes::from(out));
        Ok(Flow::Continue)
    }

    fn presence_stats(&mut self, id: u32, req: ChannelRequest) -> Result<Flow, ErrorCode> {
        self.check_presence(&req.channel)?;
        let stats = self.node.engine().presence_stats(&req.channel);
        self.reply(&Reply {
            id,
            body: ReplyBody::PresenceStats(stats),
        });
        Ok(Flow::Continue)
    }

    fn refresh(&mut self, id: u32, req: RefreshRequest) -> Result<Flow, ErrorCode> {
        let now = unix_now();
        if req.token.is_empty() {
            return Err(ErrorCode::BadRequest);
        }
        let claims = match self.conn_token(&req.token, now)? {
            Ok(c) => c,
            Err(close) => return Ok(close),
        };
        let conn = self.connected.as_mut().expect("checked in handle");
        if *claims.user != *conn.user {
            return Ok(Flow::Close(Disconnect::InvalidToken));
        }
        conn.expires_at = claims.expires_at;
        let ttl = self.ttl_of(claims.expires_at, now);
        self.reply(&Reply {
            id,
            body: ReplyBody::Refresh(RefreshResult {
                client: &self.client,
                version: rollcall_core::VERSION,
                expires: ttl.is_some(),
                ttl: ttl.unwrap_or(0),
            }),
        });
        Ok(Flow::Continue)
    }

    fn sub_refresh(&mut self, id: u32, req: SubRefreshRequest) -> Result<Flow, ErrorCode> {
        let now = unix_now();
        if req.channel.is_empty() || req.token.is_empty() {
            return Err(ErrorCode::BadRequest);
        }
        if !self.subs.contains_key(req.channel.as_str()) {
            return Err(ErrorCode::PermissionDenied);
        }
        let claims = match self.sub_token(&req.token, &req.channel, now)? {
            Ok(c) => c,
            Err(close) => return Ok(close),
        };
        if let Some(sub) = self.subs.get_mut(req.channel.as_str()) {
            sub.expires_at = claims.expires_at;
        }
        let ttl = self.ttl_of(claims.expires_at, now);
        self.reply(&Reply {
            id,
            body: ReplyBody::SubRefresh(SubscribeResult {
                expires: ttl.is_some(),
                ttl: ttl.unwrap_or(0),
            }),
        });
        Ok(Flow::Continue)
    }

    /// Sends a server ping. Returns `Close(NoPong)` if the previous one was never answered.
    pub fn ping(&mut self) -> Flow {
        if self.awaiting_pong {
            return Flow::Close(Disconnect::NoPong);
        }
        self.awaiting_pong = true;
        let _ = self
            .outbox
            .send(Bytes::from_static(rollcall_core::protocol::PING));
        Flow::Continue
    }

    /// Whether a ping is waiting for its pong.
    pub fn awaiting_pong(&self) -> bool {
        self.awaiting_pong
    }

    /// Expires what is due at `now`. A connection or subscription past its expiry gets
    /// `client.expired_close_delay` / `expired_sub_close_delay` to refresh (the SDKs refresh when
    /// `ttl` runs out, so the server must not race them); then the connection closes with 3005,
    /// or the subscription ends with an unsubscribe push 2501.
    pub fn expire(&mut self, now: u64) -> Flow {
        let client = &self.node.config().client;
        let conn_grace = client.expired_close_delay.0.as_secs();
        let sub_grace = client.expired_sub_close_delay.0.as_secs();
        if let Some(at) = self.connected.as_ref().and_then(|c| c.expires_at)
            && at.saturating_add(conn_grace) <= now
        {
            return Flow::Close(Disconnect::Expired);
        }
        let due: Vec<Channel> = self
            .subs
            .iter()
            .filter(|(_, s)| {
                s.expires_at
                    .is_some_and(|at| at.saturating_add(sub_grace) <= now)
            })
            .map(|(c, _)| c.clone())
            .collect();
        for channel in due {
            self.server_unsubscribe(&channel, UNSUBSCRIBE_EXPIRED, "subscription expired");
        }
        Flow::Continue
    }

    /// Handles requests from outside the session (namespace reload).
    pub fn control(&mut self, requests: Vec<Control>) {
        for request in requests {
            match request {
                Control::Unsubscribe(channel) => {
                    self.server_unsubscribe(&channel, UNSUBSCRIBE_SERVER, "server unsubscribe")
                }
            }
        }
    }

    fn server_unsubscribe(&mut self, channel: &str, code: u32, reason: &str) {
        if self.drop_sub(channel, "server_unsubscribe") {
            let push = encode_push(channel, PushBody::Unsubscribe { code, reason });
            let _ = self.outbox.send(Bytes::from(push));
        }
    }
}

/// Maps a token check to the session's answer: the claims, a close with 3500 (inner `Err`), or
/// error 109 for an expired token (outer `Err`).
fn token_outcome<T>(
    result: Result<T, TokenError>,
    client: &ClientId,
) -> Result<Result<T, Flow>, ErrorCode> {
    match result {
        Ok(claims) => Ok(Ok(claims)),
        Err(TokenError::Expired) => Err(ErrorCode::TokenExpired),
        Err(TokenError::Invalid(reason)) => {
            tracing::debug!(%client, %reason, "invalid token");
            Ok(Err(Flow::Close(Disconnect::InvalidToken)))
        }
    }
}

/// Whether a subscription gets join/leave pushes, with token overrides applied.
fn push_join_leave(ns: &Namespace, o: &Overrides, who: Requester<'_>, asked: bool) -> bool {
    let force = o
        .force_push_join_leave
        .unwrap_or(ns.options.force_push_join_leave);
    let join_leave = o.join_leave.unwrap_or(ns.options.join_leave);
    force || (asked && join_leave && permission::presence(&ns.options, who, true))
}

impl Drop for Session {
    /// Leaves presence for every subscription (pushing leaves) whatever closed the connection.
    fn drop(&mut self) {
        let channels: Vec<Channel> = self.subs.keys().cloned().collect();
        for channel in channels {
            self.drop_sub(&channel, "disconnect");
        }
        if let Some(conn) = &self.connected {
            self.node.hub().disconnect(&conn.user);
        }
        self.node.metrics().connections.dec();
    }
}
