//! Rollcall's server: everything that does I/O for one node.
//!
//! Request path: `transport` (axum HTTP + WebSocket) → `session` (one client's protocol state
//! machine) → `hub` (local subscriptions, fan-out of pushes) → `presence` (the engine trait;
//! `memory` for one node, `nats` for a cluster). `outbox` is a connection's bounded queue.
#![forbid(unsafe_code)]

pub mod hub;
pub mod outbox;
pub mod presence;
