// The real `cent.js` npm server-API client against a real rollcall server, once per presence
// engine: presence, presence_stats, info, channels, its newline pipeline (legacy `POST /api`),
// and how API errors reach its caller. Clients are placed with the real `centrifuge` SDK.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { CentClient } from 'cent.js';
import { CentException } from 'cent.js/dist/cent.exception.js';

import { API_KEY, Clients, ENGINES, channel, connToken, rejection, startRollcall } from './harness.mjs';

/**
 * cent.js throws `new CentException(res.error)`, which turns the error object into the message
 * "[object Object]": the code is not on the exception. To check which error the server
 * answered, this spy keeps the last API response cent.js read (status and body text).
 */
const realFetch = globalThis.fetch;
let lastResponse = null;
globalThis.fetch = async (...args) => {
  const res = await realFetch(...args);
  const copy = res.clone();
  lastResponse = { status: res.status, text: await copy.text() };
  return res;
};

for (const engine of ENGINES) {
  const server = await startRollcall(engine);
  after(() => server.stop?.());

  describe(`cent.js API client, ${engine} engine`, () => {
    let clients;
    let cent;
    before(() => {
      clients = new Clients(server);
      cent = new CentClient({ url: server.api, apiKey: API_KEY });
    });
    afterEach(() => clients.closeAll());

    /** Two users (three connections) subscribed to a fresh chat channel. */
    async function populated() {
      const ch = channel('chat');
      const alice = await clients.client({ token: connToken('alice', { info: { name: 'Alice' } }) }, { label: 'alice' });
      const bob = await clients.client({ token: connToken('bob') }, { label: 'bob' });
      const alice2 = await clients.client({ token: connToken('alice') }, { label: 'alice#2' });
      for (const c of [alice, bob, alice2]) await clients.sub(c, ch);
      const ids = [alice, bob, alice2].map((c) => c.rec.all('connected')[0].client);
      return { ch, ids };
    }

    async function apiError(promise, what) {
      const err = await rejection(promise, what);
      assert.ok(err instanceof CentException, `${what}: expected a CentException, got ${err}`);
      assert.equal(lastResponse.status, 200, `${what}: errors come with HTTP 200 by default`);
      return JSON.parse(lastResponse.text).error;
    }

    it('getPresence lists every connection with client, user and conn_info', async () => {
      const { ch, ids } = await populated();
      const res = await cent.getPresence({ channel: ch });
      assert.deepEqual(Object.keys(res.presence).sort(), [...ids].sort());
      assert.deepEqual(res.presence[ids[0]], { client: ids[0], user: 'alice', conn_info: { name: 'Alice' } });
      assert.deepEqual(res.presence[ids[1]], { client: ids[1], user: 'bob' });
    });

    it('getPresence of an empty channel is an empty map', async () => {
      assert.deepEqual(await cent.getPresence({ channel: channel('chat') }), { presence: {} });
    });

    it('getPresenceStats counts clients and distinct users', async () => {
      const { ch } = await populated();
      assert.deepEqual(await cent.getPresenceStats({ channel: ch }), { num_clients: 3, num_users: 2 });
      assert.deepEqual(await cent.getPresenceStats({ channel: channel('chat') }), { num_clients: 0, num_users: 0 });
    });

    it('getInfo describes the node', async () => {
      await populated();
      const res = await cent.getInfo();
      assert.ok(Array.isArray(res.nodes) && res.nodes.length === 1, `one node expected: ${JSON.stringify(res)}`);
      const [node] = res.nodes;
      for (const key of ['uid', 'name', 'version']) {
        assert.equal(typeof node[key], 'string', `nodes[0].${key}`);
        assert.ok(node[key].length > 0, `nodes[0].${key} is empty`);
      }
      for (const key of ['num_clients', 'num_users', 'num_channels', 'num_subs', 'uptime']) {
        assert.equal(typeof node[key], 'number', `nodes[0].${key}`);
      }
      assert.ok(node.num_clients >= 3, `num_clients ${node.num_clients}`);
      assert.ok(node.num_users >= 2, `num_users ${node.num_users}`);
      assert.ok(node.num_subs >= 3, `num_subs ${node.num_subs}`);
      assert.ok(node.num_channels >= 1, `num_channels ${node.num_channels}`);
    });

    it('getChannels filters by pattern and counts clients', async () => {
      const { ch } = await populated();
      const all = await cent.getChannels();
      assert.deepEqual(all.channels[ch], { num_clients: 3 });
      const mine = await cent.getChannels({ pattern: `${ch.slice(0, -2)}*` });
      assert.deepEqual(Object.keys(mine.channels), [ch]);
      const none = await cent.getChannels({ pattern: 'nosuchns:*' });
      assert.deepEqual(none.channels, {});
    });

    it('pipeline sends several commands to POST /api and returns each result', async () => {
      const { ch, ids } = await populated();
      const replies = await cent.pipeline([
        { method: 'presence', params: { channel: ch } },
        { method: 'presence_stats', params: { channel: ch } },
        { method: 'presence', params: { channel: channel('nosuchns') } },
        { method: 'info', params: {} },
      ]);
      assert.equal(replies.length, 4, `one reply line per command: ${lastResponse.text}`);
      const [presence, stats, failed, info] = replies;
      assert.deepEqual(Object.keys(presence.presence).sort(), [...ids].sort());
      assert.deepEqual(stats, { num_clients: 3, num_users: 2 });
      // cent.js keeps only `result`: an error line gives undefined, in its place.
      assert.equal(failed, undefined);
      assert.deepEqual(JSON.parse(lastResponse.text.split('\n')[2]), { error: { code: 102, message: 'unknown channel' } });
      assert.equal(info.nodes.length, 1);
    });

    it('reports API errors: 102 unknown namespace, 108 presence off, 107 empty channel', async () => {
      const e1 = await apiError(cent.getPresence({ channel: channel('nosuchns') }), 'presence in an unknown namespace');
      assert.deepEqual(e1, { code: 102, message: 'unknown channel' });
      const e2 = await apiError(cent.getPresenceStats({ channel: channel('nosuchns') }), 'presence_stats in an unknown namespace');
      assert.equal(e2.code, 102);
      const e3 = await apiError(cent.getPresence({ channel: channel('nopresence') }), 'presence where it is off');
      assert.deepEqual(e3, { code: 108, message: 'not available' });
      const e4 = await apiError(cent.getPresenceStats({ channel: channel('nopresence') }), 'presence_stats where it is off');
      assert.equal(e4.code, 108);
      const e5 = await apiError(cent.getPresence({ channel: '' }), 'presence of an empty channel');
      assert.equal(e5.code, 107);
    });

    it('does no permission checks: presence of a namespace clients may not query', async () => {
      const ch = channel('nopresperm');
      const c = await clients.client({ token: connToken('alice') });
      await clients.sub(c, ch);
      assert.deepEqual(await cent.getPresenceStats({ channel: ch }), { num_clients: 1, num_users: 1 });
    });

    it('rejects a wrong API key with 401', async () => {
      const wrong = new CentClient({ url: server.api, apiKey: 'not-the-key' });
      // cent.js parses the (empty) 401 body as JSON, so the call fails with a parse error.
      await rejection(wrong.getPresence({ channel: channel('chat') }), 'presence with a wrong key');
      assert.equal(lastResponse.status, 401);
      assert.equal(lastResponse.text, '');
      await rejection(new CentClient({ url: server.api }).getInfo(), 'info without a key');
      assert.equal(lastResponse.status, 401);
    });
  });
}
