//! A lean client of rollcall's JSON protocol over a real WebSocket: connect, pipelined
//! subscribes, pushes parsed without allocating, server pings answered.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type Sink = SplitSink<Ws, Message>;
pub type Stream = SplitStream<Ws>;

/// How long any single protocol step may take before the bench gives up.
pub const STEP: Duration = Duration::from_secs(30);
/// Commands per frame when pipelining set-up subscribes.
const PIPELINE: usize = 100;

/// One line of a server frame, borrowed from it.
#[derive(Debug, Deserialize)]
pub struct Line<'a> {
    #[serde(default)]
    pub id: u32,
    #[serde(borrow, default)]
    pub push: Option<Push<'a>>,
    #[serde(borrow, default)]
    pub error: Option<ErrorBody<'a>>,
    #[serde(borrow, default)]
    pub connect: Option<ConnectBody<'a>>,
}

impl Line<'_> {
    /// A server ping: `{}`.
    pub fn is_ping(&self) -> bool {
        self.id == 0 && self.push.is_none() && self.error.is_none() && self.connect.is_none()
    }
}

#[derive(Debug, Deserialize)]
pub struct ErrorBody<'a> {
    pub code: u32,
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct ConnectBody<'a> {
    #[serde(borrow)]
    pub client: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct Push<'a> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(borrow, default)]
    pub join: Option<Event<'a>>,
    #[serde(borrow, default)]
    pub leave: Option<Event<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow)]
    pub info: Info<'a>,
}

#[derive(Debug, Deserialize)]
pub struct Info<'a> {
    #[serde(borrow)]
    pub client: Cow<'a, str>,
    #[serde(borrow, default)]
    pub user: Cow<'a, str>,
}

/// The non-empty lines of a frame, parsed. A line that does not parse is an error.
pub fn lines(frame: &str) -> impl Iterator<Item = anyhow::Result<Line<'_>>> {
    frame
        .split('\n')
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad server line {l:?}")))
}

/// Opens a WebSocket with small client buffers and Nagle off.
pub async fn open(url: &str) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    .context("websocket open timed out")?
    .context("websocket open")?;
    Ok(ws)
}

/// A connected client.
pub struct Conn {
    pub ws: Ws,
    /// The client id the server assigned.
    pub client: String,
    next_id: u32,
}

impl Conn {
    /// Opens a socket and connects with `token`.
    pub async fn connect(url: &str, token: &str) -> anyhow::Result<Conn> {
        let mut ws = open(url).await?;
        let cmd = format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#);
        ws.send(Message::Text(cmd.into())).await?;
        let mut client = None;
        wait_replies(&mut ws, 1, 1, |l| {
            if let Some(c) = &l.connect {
                client = Some(c.client.to_string());
            }
        })
        .await?;
        Ok(Conn {
            ws,
            client: client.context("connect reply without a client id")?,
            next_id: 2,
        })
    }

    /// Subscribes to every channel, `PIPELINE` commands per frame; fails on any error reply.
    pub async fn subscribe_all<I>(&mut self, channels: I, join_leave: bool) -> anyhow::Result<()>
    where
        I: IntoIterator<Item = String>,
    {
        let mut channels = channels.into_iter().peekable();
        while channels.peek().is_some() {
            let first = self.next_id;
            let mut frame = String::new();
            for ch in channels.by_ref().take(PIPELINE) {
                if !frame.is_empty() {
                    frame.push('\n');
                }
                let jl = if join_leave {
                    r#","join_leave":true"#
                } else {
                    ""
                };
                frame.push_str(&format!(
                    r#"{{"id":{},"subscribe":{{"channel":"{ch}"{jl}}}}}"#,
                    self.next_id
                ));
                self.next_id += 1;
            }
            self.ws.send(Message::Text(frame.into())).await?;
            wait_replies(&mut self.ws, first, self.next_id - first, |_| {}).await?;
        }
        Ok(())
    }

    /// Keeps the connection alive in a task of `set` (see [`keep_idle`]).
    pub fn idle(self, set: &mut JoinSet<()>) {
        keep_idle(self.ws, set);
    }
}

/// Keeps a socket alive in a task of `set`: answers pings, drops everything else. Aborting
/// the task closes the socket.
pub fn keep_idle(mut ws: Ws, set: &mut JoinSet<()>) {
    set.spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg
                && t.as_str() == "{}"
                && ws.send(Message::Text("{}".into())).await.is_err()
            {
                return;
            }
        }
    });
}

/// Reads frames until the replies with ids `first..first+count` all arrived, calling `each`
/// on them. Answers pings; ignores pushes; fails on an error reply, a close or `STEP`.
pub async fn wait_replies(
    ws: &mut Ws,
    first: u32,
    count: u32,
    mut each: impl FnMut(&Line<'_>),
) -> anyhow::Result<()> {
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + STEP;
    while seen < count {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no reply to commands {first}.. within {STEP:?}"))?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => bail!("server closed the connection: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("websocket error: {e}"),
            None => bail!("connection closed"),
        };
        let mut pong = false;
        for line in lines(text.as_str()) {
            let line = line?;
            if line.is_ping() {
                pong = true;
                continue;
            }
            if line.id >= first && line.id < first + count {
                if let Some(e) = &line.error {
                    bail!("command {} failed: {} {}", line.id, e.code, e.message);
                }
                each(&line);
                seen += 1;
            }
        }
        if pong {
            ws.send(Message::Text("{}".into())).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_pushes_and_pings_of_one_frame() {
        let frame = concat!(
            r#"{"id":3,"subscribe":{}}"#,
            "\n",
            r#"{"push":{"channel":"ev:p1","join":{"info":{"client":"c-1","user":"u","conn_info":{"a":1}}}}}"#,
            "\n{}\n",
            r#"{"id":4,"error":{"code":106,"message":"limit exceeded"}}"#
        );
        let lines: Vec<Line<'_>> = lines(frame).collect::<anyhow::Result<_>>().unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].id, 3);
        assert!(!lines[0].is_ping());
        let push = lines[1].push.as_ref().unwrap();
        assert_eq!(push.channel, "ev:p1");
        let join = push.join.as_ref().unwrap();
        assert_eq!((&*join.info.client, &*join.info.user), ("c-1", "u"));
        assert!(lines[2].is_ping());
        assert_eq!(lines[3].error.as_ref().unwrap().code, 106);
    }

    #[test]
    fn a_line_that_is_not_json_is_an_error() {
        assert!(lines("{\"id\":1}\nnot json").any(|l| l.is_err()));
    }
}
