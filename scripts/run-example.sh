#!/usr/bin/env bash
# `make run`: start one node with examples/rollcall.yaml and print how to try it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ROLLCALL_BIN:-target/debug/rollcall}
CONFIG=examples/rollcall.yaml
TOKEN=$("$BIN" gentoken --config "$CONFIG" --user demo-user --ttl 86400 --info '{"name":"Demo"}' | tail -n 1)
cat <<MSG

  Rollcall — one node, memory engine, config $CONFIG
  ───────────────────────────────────────────────────
  WebSocket:  ws://localhost:8000/connection/websocket
  Token (user demo-user, valid 24 h):
    $TOKEN

  Connect and subscribe (Node.js, npm install centrifuge ws):
    node -e '
      const { Centrifuge } = require("centrifuge"); const WebSocket = require("ws");
      const c = new Centrifuge("ws://localhost:8000/connection/websocket",
        { token: "$TOKEN", websocket: WebSocket });
      const sub = c.newSubscription("chat:index");
      sub.on("join", ctx => console.log("join", ctx.info.user));
      sub.on("leave", ctx => console.log("leave", ctx.info.user));
      sub.on("subscribed", () => console.log("subscribed to chat:index"));
      sub.subscribe(); c.connect();'

  Who is in chat:index (in another terminal):
    curl -s -H 'X-API-Key: dev-api-key' -d '{"channel":"chat:index"}' http://localhost:8000/api/presence

  Counts:   curl -s -H 'X-API-Key: dev-api-key' -d '{"channel":"chat:index"}' http://localhost:8000/api/presence_stats
  Nodes:    curl -s -H 'X-API-Key: dev-api-key' -d '{}' http://localhost:8000/api/info
  Metrics:  curl -s http://localhost:8000/metrics
  Stop with Ctrl-C.

MSG
# ROLLCALL_BIN is ours, not a config override: keep it out of the server's environment.
unset ROLLCALL_BIN
exec "$BIN" serve --config "$CONFIG"
