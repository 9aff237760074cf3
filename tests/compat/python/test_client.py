"""The real `centrifuge-python` SDK against a real rollcall server, per presence engine: connect,
subscribe, presence, join/leave (subscription and client level), permission errors, tokens and
the disconnect codes the SDK reports."""

import asyncio
import re

import pytest
from centrifuge import ClientState, ReplyError, SubscriptionState

from conftest import (
    FILE_NAMESPACES, WAIT, Clients, Server, channel, client_id, conn_token, now, sign,
)

#: How long the app backend behind get_token takes in the refresh tests (seconds).
BACKEND_LATENCY = 1.0

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def reply_error(awaitable, what: str) -> ReplyError:
    with pytest.raises(ReplyError) as info:
        await awaitable
    assert info.value is not None, what
    return info.value


async def test_connect(clients: Clients):
    c = await clients.client(token=conn_token("alice"))
    ctx = c.rec.all("connected")[0]
    assert UUID_RE.match(ctx.client), ctx.client
    assert ctx.version, "connect reply carries the server version"
    assert c.state == ClientState.CONNECTED


async def test_presence_and_stats(clients: Clients):
    ch = channel("chat")
    alice = await clients.client("alice", token=conn_token("alice", info={"name": "Alice"}))
    bob = await clients.client("bob", token=conn_token("bob"))
    alice2 = await clients.client("alice#2", token=conn_token("alice"))
    sub_a = await clients.sub(alice, ch)
    await clients.sub(bob, ch)
    await clients.sub(alice2, ch)
    ids = [client_id(c) for c in (alice, bob, alice2)]

    res = await sub_a.presence()
    assert sorted(res.clients) == sorted(ids)
    a = res.clients[ids[0]]
    assert (a.client, a.user, a.conn_info, a.chan_info) == (ids[0], "alice", {"name": "Alice"}, None)
    assert res.clients[ids[1]].user == "bob"
    assert res.clients[ids[1]].conn_info is None

    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (3, 2)
    via_client = await bob.presence(ch)
    assert sorted(via_client.clients) == sorted(ids)
    stats = await bob.presence_stats(ch)
    assert (stats.num_clients, stats.num_users) == (3, 2)


async def test_join_and_leave(clients: Clients):
    ch = channel("chat")
    alice = await clients.client("alice", token=conn_token("alice"))
    bob = await clients.client("bob", token=conn_token("bob", info={"role": "guest"}))
    bob_id = client_id(bob)
    sub_a = await clients.sub(alice, ch)
    sub_b = await clients.sub(bob, ch)

    def is_bob(ctx):
        return ctx.info.client == bob_id

    join = await sub_a.rec.wait("join", is_bob, what="for bob")
    assert join.info.user == "bob"
    assert join.info.conn_info == {"role": "guest"}
    await sub_b.rec.wait("join", is_bob, what="of bob himself")
    names = sub_b.rec.names()
    assert names.index("subscribed") < names.index("join"), \
        f"bob's subscribe reply must come before his own join: {names}"

    await sub_b.unsubscribe()
    leave = await sub_a.rec.wait("leave", is_bob, what="after bob unsubscribed")
    assert leave.info.user == "bob"

    await sub_b.subscribe()
    await sub_a.rec.wait("join", is_bob, n=2, what="for bob subscribing again")
    await bob.disconnect()
    await sub_a.rec.wait("leave", is_bob, n=2, what="after bob disconnected")
    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)


async def test_join_leave_opt_in(clients: Clients):
    ch = channel("optin")
    watcher = await clients.client("watcher", token=conn_token("watcher"))
    sub_w = await clients.sub(watcher, ch, join_leave=True)
    quiet = await clients.client("quiet", token=conn_token("quiet"))
    sub_q = await clients.sub(quiet, ch)
    anon = await clients.client("anonymous", token=conn_token(""))
    sub_n = await clients.sub(anon, ch, join_leave=True)

    joiner = await clients.client("joiner", token=conn_token("joiner"))
    joiner_id = client_id(joiner)
    sub_j = await clients.sub(joiner, ch)
    await sub_w.rec.wait("join", lambda j: j.info.client == joiner_id, what="for the joiner")
    await sub_j.unsubscribe()
    await sub_w.rec.wait("leave", lambda j: j.info.client == joiner_id, what="for the joiner")

    # Barrier: a round trip on each silent connection after the pushes were fanned out.
    await quiet.presence_stats(ch)
    denied = await reply_error(anon.presence_stats(ch), "presence_stats for an anonymous subscriber")
    assert denied.code == 103
    assert sub_q.rec.all("join") + sub_q.rec.all("leave") == [], \
        "a subscriber that did not ask for join_leave got pushes"
    assert sub_n.rec.all("join") + sub_n.rec.all("leave") == [], \
        "an anonymous subscriber without presence permission got pushes"


async def test_server_side_subscriptions(clients: Clients):
    ch = channel("chat", "server-side")
    first = await clients.client("first", token=conn_token("first", channels=[ch]))
    first_id = client_id(first)
    sub = await first.rec.wait("subscribed", lambda s: s.channel == ch)
    assert sub.channel == ch
    await first.rec.wait("join", lambda j: j.channel == ch and j.info.client == first_id,
                         what="of itself")

    watcher = await clients.client("watcher", token=conn_token("watcher"))
    sub_w = await clients.sub(watcher, ch)

    # The `subs` claim (which wins over `channels`) carries the channel info: chan_info.
    second = await clients.client("second", token=conn_token(
        "second", channels=["chat:ignored"], subs={ch: {"info": {"seat": 3}}}))
    second_id = client_id(second)
    await second.rec.wait("subscribed", lambda x: x.channel == ch)
    join = await first.rec.wait("join", lambda j: j.info.client == second_id,
                                what="for second (client level)")
    assert (join.channel, join.info.user, join.info.chan_info) == (ch, "second", {"seat": 3})
    await sub_w.rec.wait("join", lambda j: j.info.client == second_id,
                         what="for second (subscription level)")

    res = await first.presence(ch)
    assert sorted(res.clients) == sorted([first_id, second_id, client_id(watcher)])

    await second.disconnect()
    leave = await first.rec.wait("leave", lambda j: j.info.client == second_id,
                                 what="for second (client level)")
    assert (leave.channel, leave.info.user) == (ch, "second")
    await sub_w.rec.wait("leave", lambda j: j.info.client == second_id,
                         what="for second (subscription level)")


async def test_subscribe_errors(clients: Clients):
    c = await clients.client(token=conn_token("alice"))
    closed = await clients.sub(c, channel("closed"), subscribe=False)
    await closed.subscribe()
    u1 = await closed.rec.wait("unsubscribed")
    assert (u1.code, u1.reason) == (103, "permission denied")
    assert closed.state == SubscriptionState.UNSUBSCRIBED

    unknown = await clients.sub(c, channel("nosuchns"), subscribe=False)
    await unknown.subscribe()
    u2 = await unknown.rec.wait("unsubscribed")
    assert (u2.code, u2.reason) == (102, "unknown channel")
    assert c.state == ClientState.CONNECTED


async def test_subscription_token_sets_chan_info(clients: Clients):
    ch = channel("closed")
    c = await clients.client(token=conn_token("alice"))
    asked = []

    async def get_token(chan: str) -> str:
        asked.append(chan)
        return sign({"sub": "alice", "channel": chan, "info": {"seat": 7}, "exp": now() + 3600})

    s = await clients.sub(c, ch, get_token=get_token)
    assert asked == [ch]
    res = await s.presence()
    me = res.clients[client_id(c)]
    assert (me.user, me.chan_info) == ("alice", {"seat": 7})


async def test_presence_errors(clients: Clients):
    c = await clients.client(token=conn_token("alice"))
    ch = channel("nopresperm")
    await clients.sub(c, ch)
    assert (await reply_error(c.presence(ch), "presence without permission")).code == 103
    assert (await reply_error(c.presence_stats(ch), "presence_stats without permission")).code == 103
    assert (await reply_error(c.presence(channel("chat")), "presence, not subscribed")).code == 103
    assert (await reply_error(c.presence(channel("nosuchns")), "unknown namespace")).code == 102
    err = await reply_error(c.presence(channel("nopresence")), "presence off")
    assert (err.code, err.message) == (108, "not available")
    stats = await c.presence_stats(channel("lobby"))
    assert (stats.num_clients, stats.num_users) == (0, 0)
    assert c.state == ClientState.CONNECTED


async def test_invalid_token_is_terminal_3500(clients: Clients):
    c = await clients.client(connect=False, token=sign({"sub": "mallory"}, "wrong-secret"))
    await c.connect()
    d = await c.rec.wait("disconnected")
    assert (d.code, d.reason) == (3500, "invalid token")
    assert c.state == ClientState.DISCONNECTED
    assert c.rec.all("connected") == []


async def test_no_token_is_terminal_3501(clients: Clients):
    c = await clients.client(connect=False)
    await c.connect()
    d = await c.rec.wait("disconnected")
    assert d.code == 3501
    assert c.state == ClientState.DISCONNECTED


async def test_expired_token_refreshed_with_get_token(clients: Clients):
    calls = []

    async def get_token() -> str:
        calls.append(1)
        return conn_token("alice")

    c = await clients.client(connect=False, token=conn_token("alice", exp=now() - 10),
                             get_token=get_token)
    await c.connect()
    err = await c.rec.wait("error", lambda e: isinstance(e.error, ReplyError))
    assert err.error.code == 109
    await c.rec.wait("connected")
    assert len(calls) == 1


async def test_expired_token_without_get_token_is_unauthorized(clients: Clients):
    c = await clients.client(connect=False, token=conn_token("alice", exp=now() - 10))
    await c.connect()
    d = await c.rec.wait("disconnected")
    assert d.code == 1, f"expected the SDK's 'unauthorized' (1), got {d.code} {d.reason}"
    assert len(c.rec.all("error", lambda e: getattr(e.error, "code", None) == 109)) == 1


async def test_refresh_keeps_connection(clients: Clients):
    """Token lifetime 2 s: the SDK calls get_token when the connect reply's ttl runs out and
    sends `refresh`. get_token takes 1 s here, as a call to an app backend may: Centrifugo
    keeps an expired connection open for a grace period (25 s by default) so that this
    refresh lands. The SDK calls get_token again only after the refresh reply (with a new
    ttl) arrived, or after a reconnect (checked below)."""
    calls = 0
    second = asyncio.Event()

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            second.set()
        else:
            await asyncio.sleep(BACKEND_LATENCY)
        return conn_token("alice", exp=now() + 2)

    c = await clients.client("refreshing", token=conn_token("alice", exp=now() + 2),
                             get_token=get_token)
    cid = client_id(c)
    ch = channel("chat")
    s = await clients.sub(c, ch)
    try:
        await asyncio.wait_for(second.wait(), 8)
    except asyncio.TimeoutError:
        raise AssertionError(f"get_token not called for a second refresh in 8 s; events {c.rec.names()}")
    drops = c.rec.all("connecting", lambda x: x.code != 0)
    assert drops == [], (
        "the server dropped the connection instead of taking the refresh the SDK sends when "
        "the ttl of the connect reply runs out (Centrifugo keeps an expired connection open "
        f"for a grace period so that this refresh can land); drops: {drops}")
    await c.presence_stats(ch)
    assert c.state == ClientState.CONNECTED
    assert [x.client for x in c.rec.all("connected")] == [cid]
    assert s.state == SubscriptionState.SUBSCRIBED


async def test_pings_keep_connection(clients: Clients):
    """Servers ping every second and close with 3012 when a pong is missing (3501 when one
    was not asked for): the SDK's pongs keep it connected through 2.5 s of pings."""
    c = await clients.client("pinged", token=conn_token("alice"))
    with pytest.raises(AssertionError, match="no 'connecting' event"):
        await c.rec.wait("connecting", lambda x: x.code != 0, timeout=2.5)
    assert c.state == ClientState.CONNECTED
    assert len(c.rec.all("connected")) == 1


async def test_subscriptions_made_before_connect(clients: Clients):
    c = await clients.client("early", connect=False, token=conn_token("alice"))
    chans = [channel("chat"), channel("lobby"), channel("optin")]
    subs = [await clients.sub(c, ch, subscribe=False) for ch in chans]
    for s in subs:
        await s.subscribe()
    await c.connect()
    for s in subs:
        await s.rec.wait("subscribed")
    for ch in chans:
        stats = await c.presence_stats(ch)
        assert (stats.num_clients, stats.num_users) == (1, 1)


async def test_subscription_refresh_keeps_subscription(clients: Clients):
    """The SDK sends `sub_refresh` when the subscribe reply's ttl runs out; Centrifugo gives the
    subscription a grace period (25 s) after `exp` for it. get_token takes 1 s for the refresh."""
    ch = channel("closed")
    c = await clients.client("sub-refresher", token=conn_token("alice"))
    calls = 0
    second = asyncio.Event()

    async def get_token(chan: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:  # the refresh; the subscribe itself is fast
            await asyncio.sleep(BACKEND_LATENCY)
        if calls == 3:
            second.set()
        return sign({"sub": "alice", "channel": chan, "exp": now() + 2})

    s = await clients.sub(c, ch, get_token=get_token)
    try:
        await asyncio.wait_for(second.wait(), 8)
    except asyncio.TimeoutError:
        raise AssertionError(f"get_token not called for a second refresh in 8 s; events {s.rec.names()}")
    drops = s.rec.all("subscribing", lambda x: x.code != 0) + s.rec.all("unsubscribed")
    assert drops == [], (
        "the server ended the subscription instead of taking the sub_refresh the SDK sends "
        f"when the ttl of the subscribe reply runs out: {drops}")
    await s.presence_stats()
    assert s.state == SubscriptionState.SUBSCRIBED
    assert len(s.rec.all("subscribed")) == 1


async def test_namespace_removed_from_file_unsubscribes_2000(clients: Clients, server: Server):
    ch = channel("hot")
    c = await clients.client(token=conn_token("alice"))
    s = await clients.sub(c, ch)
    server.write_namespaces_file([n for n in FILE_NAMESPACES if n["name"] != "hot"])
    u = await s.rec.wait("unsubscribed", what="after the namespace was removed")
    assert u.code == 2000
    assert s.state == SubscriptionState.UNSUBSCRIBED
    assert c.state == ClientState.CONNECTED
    assert (await reply_error(c.presence(ch), "presence in the removed namespace")).code == 102


async def test_shutdown_closes_with_3001_and_sdk_reconnects(server: Server):
    own = Server(server.engine)
    try:
        owned = Clients(own)
        c = await owned.client("shutdown", token=conn_token("alice"))
        own.terminate()
        ctx = await c.rec.wait("connecting", lambda x: x.code != 0, what="after SIGTERM")
        assert (ctx.code, ctx.reason) == (3001, "shutdown")
        code = await asyncio.get_running_loop().run_in_executor(None, own.wait_exit, WAIT)
        assert code == 0, f"exit status {code}; log:\n{own.log()}"
        await owned.close_all()
    finally:
        own.stop()
