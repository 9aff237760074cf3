//! Every error code and disconnect code of the Centrifugo protocol that Rollcall uses, in one place.

use serde::Serialize;

/// A protocol error: what a client command or a server API call can fail with.
///
/// Each variant maps to exactly one numeric code and message (Centrifugo's); the connection
/// stays open after an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: an internal error; temporary, the client may retry.
    Internal,
    /// 101: the client is not authorized (connect rejected by the server API).
    Unauthorized,
    /// 102: the channel's namespace is not configured.
    UnknownChannel,
    /// 103: permission denied.
    PermissionDenied,
    /// 104: the method is not known.
    MethodNotFound,
    /// 105: the client is already subscribed to the channel.
    AlreadySubscribed,
    /// 106: a limit (subscriptions per connection) was exceeded.
    LimitExceeded,
    /// 107: malformed request: empty or invalid channel, bad parameters.
    BadRequest,
    /// 108: the feature is not available (presence off for the namespace).
    NotAvailable,
    /// 109: the token has expired.
    TokenExpired,
    /// 111: too many requests; temporary.
    TooManyRequests,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub const fn code(self) -> u32 {
        match self {
            ErrorCode::Internal => 100,
            ErrorCode::Unauthorized => 101,
            ErrorCode::UnknownChannel => 102,
            ErrorCode::PermissionDenied => 103,
            ErrorCode::MethodNotFound => 104,
            ErrorCode::AlreadySubscribed => 105,
            ErrorCode::LimitExceeded => 106,
            ErrorCode::BadRequest => 107,
            ErrorCode::NotAvailable => 108,
            ErrorCode::TokenExpired => 109,
            ErrorCode::TooManyRequests => 111,
        }
    }

    /// The message Centrifugo sends with this code.
    pub const fn message(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::TooManyRequests => "too many requests",
        }
    }

    /// Whether a client may retry the same command (codes 100 and 111).
    pub const fn temporary(self) -> bool {
        matches!(self, ErrorCode::Internal | ErrorCode::TooManyRequests)
    }

    /// A short label for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::MethodNotFound => "method_not_found",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotAvailable => "not_available",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TooManyRequests => "too_many_requests",
        }
    }

    /// The wire form: `{"code":N,"message":"…"}` plus `"temporary":true` where it applies.
    pub fn to_error(self) -> ProtocolError {
        ProtocolError {
            code: self.code(),
            message: self.message(),
            temporary: self.temporary(),
        }
    }
}

/// The serialized error object shared by the client protocol and the server API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolError {
    pub code: u32,
    pub message: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

/// Why the server closes a WebSocket: the close code and reason Centrifugo SDKs understand.
///
/// Codes 3000–3499 let the SDK reconnect; 3500–3999 are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disconnect {
    /// 3001: the server shuts down.
    Shutdown,
    /// 3004: an internal error.
    InternalError,
    /// 3005: the connection token expired and was not refreshed.
    Expired,
    /// 3008: the client reads too slowly; its outgoing queue overflowed.
    Slow,
    /// 3012: no pong within `client.pong_timeout`.
    NoPong,
    /// 3500: invalid token.
    InvalidToken,
    /// 3501: bad request (malformed frame, wrong first command, unasked pong).
    BadRequest,
    /// 3502: no connect command within 10 s.
    Stale,
    /// 3503: force disconnect.
    ForceDisconnect,
    /// 3504: too many connections on this node.
    ConnectionLimit,
    /// 3505: too many channels in the token.
    ChannelLimit,
    /// 3507: permission denied.
    PermissionDenied,
    /// 1009: a frame over the size limit (standard WebSocket code).
    MessageTooBig,
}

impl Disconnect {
    /// The WebSocket close code.
    pub const fn code(self) -> u16 {
        match self {
            Disconnect::Shutdown => 3001,
            Disconnect::InternalError => 3004,
            Disconnect::Expired => 3005,
            Disconnect::Slow => 3008,
            Disconnect::NoPong => 3012,
            Disconnect::InvalidToken => 3500,
            Disconnect::BadRequest => 3501,
            Disconnect::Stale => 3502,
            Disconnect::ForceDisconnect => 3503,
            Disconnect::ConnectionLimit => 3504,
            Disconnect::ChannelLimit => 3505,
            Disconnect::PermissionDenied => 3507,
            Disconnect::MessageTooBig => 1009,
        }
    }

    /// The close reason text.
    pub const fn reason(self) -> &'static str {
        match self {
            Disconnect::Shutdown => "shutdown",
            Disconnect::InternalError => "internal server error",
            Disconnect::Expired => "connection expired",
            Disconnect::Slow => "slow",
            Disconnect::NoPong => "no pong",
            Disconnect::InvalidToken => "invalid token",
            Disconnect::BadRequest => "bad request",
            Disconnect::Stale => "stale",
            Disconnect::ForceDisconnect => "force disconnect",
            Disconnect::ConnectionLimit => "connection limit",
            Disconnect::ChannelLimit => "channel limit",
            Disconnect::PermissionDenied => "permission denied",
            Disconnect::MessageTooBig => "message too big",
        }
    }

    /// A short label for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Disconnect::Shutdown => "shutdown",
            Disconnect::InternalError => "internal",
            Disconnect::Expired => "expired",
            Disconnect::Slow => "slow",
            Disconnect::NoPong => "no_pong",
            Disconnect::InvalidToken => "invalid_token",
            Disconnect::BadRequest => "bad_request",
            Disconnect::Stale => "stale",
            Disconnect::ForceDisconnect => "force",
            Disconnect::ConnectionLimit => "connection_limit",
            Disconnect::ChannelLimit => "channel_limit",
            Disconnect::PermissionDenied => "permission_denied",
            Disconnect::MessageTooBig => "too_big",
        }
    }

    /// Whether the SDK reconnects after this close.
    pub const fn reconnect(self) -> bool {
        let c = self.code();
        c >= 3000 && c < 3500
    }
}

/// Unsubscribe push code sent when a namespace disappears on hot reload (server-side unsubscribe).
pub const UNSUBSCRIBE_SERVER: u32 = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_only_for_100_and_111() {
        assert!(ErrorCode::Internal.temporary());
        assert!(ErrorCode::TooManyRequests.temporary());
        assert!(!ErrorCode::PermissionDenied.temporary());
        let json = serde_json::to_string(&ErrorCode::NotAvailable.to_error()).unwrap();
        assert_eq!(json, r#"{"code":108,"message":"not available"}"#);
        let json = serde_json::to_string(&ErrorCode::Internal.to_error()).unwrap();
        assert_eq!(
            json,
            r#"{"code":100,"message":"internal server error","temporary":true}"#
        );
    }

    #[test]
    fn reconnectable_codes() {
        assert!(Disconnect::Shutdown.reconnect());
        assert!(Disconnect::Slow.reconnect());
        assert!(Disconnect::NoPong.reconnect());
        assert!(!Disconnect::InvalidToken.reconnect());
        assert!(!Disconnect::MessageTooBig.reconnect());
    }
}
