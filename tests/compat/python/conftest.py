"""Harness of the python compat suite: a real `rollcall serve` per presence engine (with a real
`nats-server` for the NATS engine), HS256 tokens, and real `centrifuge-python` clients whose
events are recorded and awaited with bounded waits that fail with a clear message."""

from __future__ import annotations

import asyncio
import atexit
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from centrifuge import (
    Client,
    ClientEventHandler,
    Subscription,
    SubscriptionEventHandler,
)

REPO = Path(__file__).resolve().parents[3]
ROLLCALL_BIN = os.environ.get("ROLLCALL_BIN") or str(REPO / "target/debug/rollcall")
NATS_SERVER = os.environ.get("NATS_SERVER", "nats-server")

API_KEY = "compat-api-key"
SECRET = "compat-token-secret"
#: How long any single wait lasts before the test fails (seconds).
WAIT = 5.0

# Loopback only: never let a proxy from the environment sit between the clients and the server.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

#: Namespaces every run configures; each exercises one rule of client-protocol.md.
#: chat: presence + join/leave pushed to every subscriber (the `make run` namespace).
#: optin: join/leave only for subscribers that ask and may see presence (not anonymous ones).
#: closed: nobody subscribes without a subscription token. nopresperm: no presence permission.
#: nopresence: presence off (108). lobby: presence readable without subscribing.
#: The namespaces file (hot reloaded) adds `hot`, which a test removes again.
NAMESPACES = [
    {"name": "chat", "presence": True, "join_leave": True, "force_push_join_leave": True,
     "allow_subscribe_for_client": True, "allow_presence_for_subscriber": True},
    {"name": "optin", "presence": True, "join_leave": True, "allow_subscribe_for_client": True,
     "allow_subscribe_for_anonymous": True, "allow_presence_for_subscriber": True},
    {"name": "closed", "presence": True, "join_leave": True, "force_push_join_leave": True,
     "allow_presence_for_subscriber": True},
    {"name": "nopresperm", "presence": True, "allow_subscribe_for_client": True},
    {"name": "nopresence", "allow_subscribe_for_client": True, "allow_presence_for_client": True},
    {"name": "lobby", "presence": True, "allow_subscribe_for_client": True,
     "allow_presence_for_client": True},
]

FILE_NAMESPACES = [
    {"name": "hot", "presence": True, "join_leave": True, "force_push_join_leave": True,
     "allow_subscribe_for_client": True, "allow_presence_for_subscriber": True},
]

#: Server ping interval of every test server: short, so every test also runs through pings.
PING_INTERVAL = "1s"


def channel(ns: str, label: str = "room") -> str:
    """A unique channel in `ns`, so tests never see each other's clients."""
    return f"{ns}:{label}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------ tokens

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: Dict[str, Any], secret: str = SECRET) -> str:
    """An HS256 JWT with `claims`."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def now() -> int:
    return int(time.time())


def conn_token(user: str, **claims: Any) -> str:
    """A connection token for `user`, valid for an hour unless `exp` is given."""
    return sign({"sub": user, "exp": now() + 3600, **claims})


# --------------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process whose output is collected (for failure messages) and which is killed."""

    def __init__(self, args: List[str], env: Dict[str, str]):
        self.output: List[str] = []
        self.proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # Never outlive pytest, even when it ends without running fixture teardowns.
        atexit.register(self._reap)

    def _reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def log(self) -> str:
        return "".join(self.output)

    def exited(self) -> Optional[int]:
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def _until(deadline: float, probe: Callable[[], bool], what: str, log: Callable[[], str]) -> None:
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}; log:\n{log()}")
        time.sleep(0.025)  # polling a process that offers no event to await


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Server:
    """A running `rollcall serve` (plus its nats-server for the NATS engine)."""

    def __init__(self, engine: str):
        self.engine = engine
        self.dir = tempfile.mkdtemp(prefix="rollcall-compat-py-")
        self.nats: Optional[Proc] = None
        self.ns_file = os.path.join(self.dir, "namespaces.json")
        self.write_namespaces_file(FILE_NAMESPACES)
        config: Dict[str, Any] = {
            "http_server": {"address": "127.0.0.1"},
            "http_api": {"key": API_KEY},
            # No allowed_origins: python clients send no Origin header, which the default allows.
            "client": {"token": {"hmac_secret_key": SECRET}, "ping_interval": PING_INTERVAL,
                       "pong_timeout": "2s"},
            "channel": {"namespaces": NAMESPACES, "namespaces_file": self.ns_file},
            "engine": {"type": engine},
            "shutdown": {"timeout": "3s"},
            "log": {"level": "info"},
        }
        if engine == "nats":
            if shutil.which(NATS_SERVER) is None:
                raise AssertionError(f"{NATS_SERVER} not on PATH: run scripts/install-nats.sh")
            nats_port = free_port()
            self.nats = Proc([NATS_SERVER, "-a", "127.0.0.1", "-p", str(nats_port)], {})
            _until(time.monotonic() + 10, lambda: self._nats_up(nats_port),
                   f"nats-server not listening on 127.0.0.1:{nats_port} within 10s", self.nats.log)
            config["engine"]["nats"] = {"url": f"nats://127.0.0.1:{nats_port}",
                                        "prefix": f"compat{uuid.uuid4().hex[:8]}"}
        path = os.path.join(self.dir, "rollcall.json")
        with open(path, "w") as f:
            json.dump(config, f, indent=2)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.api = f"{self.base}/api"
        self.ws = f"ws://127.0.0.1:{port}/connection/websocket"
        self.proc = Proc([ROLLCALL_BIN, "serve", "--config", path],
                         {"ROLLCALL_HTTP_SERVER_PORT": str(port), "NO_COLOR": "1", "RUST_LOG": ""})
        try:
            _until(time.monotonic() + 20, self._ready,
                   f"rollcall serve (engine {engine}) not ready on {self.base} within 20s",
                   self.proc.log)
        except BaseException:
            self.stop()
            raise

    def _nats_up(self, port: int) -> bool:
        assert self.nats is not None
        if self.nats.exited() is not None:
            raise AssertionError(f"nats-server exited {self.nats.exited()}:\n{self.nats.log()}")
        return _tcp_open(port)

    def _ready(self) -> bool:
        code = self.proc.exited()
        if code is not None:
            raise AssertionError(
                f"rollcall serve (engine {self.engine}) exited {code}:\n{self.proc.log()}")
        try:
            with urllib.request.urlopen(f"{self.base}/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return self.proc.log()

    def write_namespaces_file(self, namespaces: List[Dict[str, Any]]) -> None:
        """Replaces the namespaces file the way Kubernetes does: a new file renamed over it."""
        tmp = self.ns_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"namespaces": namespaces}, f)
        os.replace(tmp, self.ns_file)

    def terminate(self) -> None:
        """SIGTERM: graceful shutdown."""
        self.proc.proc.terminate()

    def wait_exit(self, timeout: float) -> int:
        return self.proc.proc.wait(timeout=timeout)

    def stop(self) -> None:
        self.proc.kill()
        if self.nats is not None:
            self.nats.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session", params=["memory", "nats"])
def server(request):
    """A rollcall server per engine: every scenario runs against memory and NATS."""
    srv = Server(request.param)
    yield srv
    srv.stop()


# ------------------------------------------------------------------------- clients and events

class Recorder:
    """Every event of a client or subscription, in order; `wait` awaits the n-th matching one
    (events seen before the wait count, so an action and its wait never race)."""

    def __init__(self, label: str):
        self.label = label
        self.events: List[Tuple[str, Any]] = []
        self._waiters: List[asyncio.Event] = []

    def add(self, name: str, ctx: Any) -> None:
        self.events.append((name, ctx))
        for w in self._waiters:
            w.set()

    def all(self, name: str, pred: Callable[[Any], bool] = lambda _: True) -> List[Any]:
        return [c for n, c in self.events if n == name and pred(c)]

    def names(self) -> List[str]:
        return [n for n, _ in self.events]

    async def wait(self, name: str, pred: Callable[[Any], bool] = lambda _: True, n: int = 1,
                   what: str = "", timeout: float = WAIT) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            seen = self.all(name, pred)
            if len(seen) >= n:
                return seen[n - 1]
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"{self.label}: no '{name}' event #{n} {what} within {timeout}s; "
                    f"events so far: {self._summary()}")
            changed = asyncio.Event()
            self._waiters.append(changed)
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.remove(changed)

    def _summary(self) -> List[str]:
        out = []
        for n, c in self.events:
            code = getattr(c, "code", None)
            out.append(f"{n}({code})" if code is not None else n)
        return out


def _recording(base: type, names: List[str]) -> type:
    def method(event: str):
        async def handler(self, ctx):
            self.rec.add(event, ctx)
        return handler

    attrs = {f"on_{n}": method(n) for n in names}
    attrs["__init__"] = lambda self, rec: setattr(self, "rec", rec)
    return type(f"Recording{base.__name__}", (base,), attrs)


ClientEvents = _recording(ClientEventHandler, [
    "connecting", "connected", "disconnected", "error", "subscribed", "subscribing",
    "unsubscribed", "publication", "join", "leave"])
SubEvents = _recording(SubscriptionEventHandler, [
    "subscribing", "subscribed", "unsubscribed", "publication", "join", "leave", "error"])


class Clients:
    """Creates real centrifuge-python clients against `server`; disconnects them all at the end."""

    def __init__(self, server: Server):
        self.server = server
        self.open: List[Client] = []

    async def client(self, label: str = "client", connect: bool = True, **options: Any) -> Client:
        rec = Recorder(label)
        options.setdefault("min_reconnect_delay", 0.1)
        options.setdefault("max_reconnect_delay", 1.0)
        options.setdefault("timeout", WAIT)
        c = Client(self.server.ws, events=ClientEvents(rec), proxy=None, **options)
        c.rec = rec  # type: ignore[attr-defined]
        self.open.append(c)
        if connect:
            await c.connect()
            await rec.wait("connected")
        return c

    async def sub(self, client: Client, ch: str, subscribe: bool = True, **options: Any) -> Subscription:
        rec = Recorder(f"{client.rec.label}/{ch}")  # type: ignore[attr-defined]
        s = client.new_subscription(ch, events=SubEvents(rec), **options)
        s.rec = rec  # type: ignore[attr-defined]
        if subscribe:
            await s.subscribe()
            await rec.wait("subscribed")
        return s

    async def close_all(self) -> None:
        for c in self.open:
            await c.disconnect()
        self.open = []


def client_id(c: Client) -> str:
    return c.rec.all("connected")[0].client  # type: ignore[attr-defined]


@pytest.fixture
async def clients(server):
    cs = Clients(server)
    yield cs
    await cs.close_all()
