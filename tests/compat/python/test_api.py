"""The real `cent` (PyPI, v5) server-API client against a real rollcall server, per presence
engine. cent 5 posts each request to `<api_url>/<method>` with `X-API-Key`, raises
`CentApiResponseError(code)` for an error in the body, `CentUnauthorizedError` for HTTP 401,
and `CentTransportError(status)` for any other non-200. Clients are placed with the real
centrifuge-python SDK."""

from typing import List, Tuple

import pytest
from cent import (
    AsyncClient,
    BatchRequest,
    ChannelsRequest,
    Client,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError

from conftest import API_KEY, Clients, channel, client_id, conn_token


@pytest.fixture
def cent(server) -> Client:
    client = Client(server.api, API_KEY, timeout=5)
    yield client
    client.close()


async def populated(clients: Clients) -> Tuple[str, List[str]]:
    """Two users (three connections) subscribed to a fresh chat channel."""
    ch = channel("chat")
    alice = await clients.client("alice", token=conn_token("alice", info={"name": "Alice"}))
    bob = await clients.client("bob", token=conn_token("bob"))
    alice2 = await clients.client("alice#2", token=conn_token("alice"))
    for c in (alice, bob, alice2):
        await clients.sub(c, ch)
    return ch, [client_id(c) for c in (alice, bob, alice2)]


async def test_presence(clients: Clients, cent: Client):
    ch, ids = await populated(clients)
    res = cent.presence(PresenceRequest(channel=ch))
    assert sorted(res.presence) == sorted(ids)
    a = res.presence[ids[0]]
    assert (a.client, a.user, a.conn_info, a.chan_info) == (ids[0], "alice", {"name": "Alice"}, None)
    assert res.presence[ids[1]].user == "bob"
    assert cent.presence(PresenceRequest(channel=channel("chat"))).presence == {}


async def test_presence_stats(clients: Clients, cent: Client):
    ch, _ = await populated(clients)
    res = cent.presence_stats(PresenceStatsRequest(channel=ch))
    assert (res.num_clients, res.num_users) == (3, 2)
    empty = cent.presence_stats(PresenceStatsRequest(channel=channel("chat")))
    assert (empty.num_clients, empty.num_users) == (0, 0)


async def test_info(clients: Clients, cent: Client):
    await populated(clients)
    res = cent.info(InfoRequest())
    assert len(res.nodes) == 1, res
    node = res.nodes[0]
    assert node.uid and node.name and node.version
    assert node.num_clients >= 3 and node.num_users >= 2
    assert node.num_subs >= 3 and node.num_channels >= 1
    assert node.uptime >= 0


async def test_channels(clients: Clients, cent: Client):
    ch, _ = await populated(clients)
    res = cent.channels(ChannelsRequest())
    assert res.channels[ch].num_clients == 3
    mine = cent.channels(ChannelsRequest(pattern=ch[:-2] + "*"))
    assert list(mine.channels) == [ch]
    assert cent.channels(ChannelsRequest(pattern="nosuchns:*")).channels == {}


async def test_batch(clients: Clients, cent: Client):
    ch, ids = await populated(clients)
    res = cent.batch(BatchRequest(
        requests=[PresenceRequest(channel=ch), PresenceStatsRequest(channel=ch), InfoRequest()],
        parallel=True,
    ))
    presence, stats, info = res.replies
    assert sorted(presence.presence) == sorted(ids)
    assert (stats.num_clients, stats.num_users) == (3, 2)
    assert len(info.nodes) == 1


async def test_async_client(clients: Clients, server):
    ch, ids = await populated(clients)
    api = AsyncClient(server.api, API_KEY, timeout=5)
    try:
        res = await api.presence(PresenceRequest(channel=ch))
        assert sorted(res.presence) == sorted(ids)
        stats = await api.presence_stats(PresenceStatsRequest(channel=ch))
        assert (stats.num_clients, stats.num_users) == (3, 2)
        with pytest.raises(CentApiResponseError) as err:
            await api.presence(PresenceRequest(channel=channel("nosuchns")))
        assert err.value.code == 102
    finally:
        await api.close()


@pytest.mark.parametrize("method", ["presence", "presence_stats"])
def test_api_errors(cent: Client, method: str):
    request = PresenceRequest if method == "presence" else PresenceStatsRequest
    call = getattr(cent, method)
    with pytest.raises(CentApiResponseError) as err:
        call(request(channel=channel("nosuchns")))
    assert (err.value.code, err.value.message) == (102, "unknown channel")
    with pytest.raises(CentApiResponseError) as err:
        call(request(channel=channel("nopresence")))
    assert (err.value.code, err.value.message) == (108, "not available")
    with pytest.raises(CentApiResponseError) as err:
        call(request(channel=""))
    assert err.value.code == 107


async def test_no_permission_checks(clients: Clients, cent: Client):
    ch = channel("nopresperm")
    c = await clients.client(token=conn_token("alice"))
    await clients.sub(c, ch)
    res = cent.presence_stats(PresenceStatsRequest(channel=ch))
    assert (res.num_clients, res.num_users) == (1, 1)


def test_wrong_key_is_401(server):
    with Client(server.api, "not-the-key", timeout=5) as wrong:
        with pytest.raises(CentUnauthorizedError):
            wrong.presence(PresenceRequest(channel=channel("chat")))
        with pytest.raises(CentUnauthorizedError):
            wrong.info(InfoRequest())


async def test_wrong_key_is_401_async(server):
    wrong = AsyncClient(server.api, "not-the-key", timeout=5)
    try:
        with pytest.raises(CentUnauthorizedError):
            await wrong.presence_stats(PresenceStatsRequest(channel=channel("chat")))
    finally:
        await wrong.close()
