// The real `centrifuge` npm SDK (v5, WebSocket from `ws`) against a real rollcall server, once
// per presence engine: connect, subscribe, presence, join/leave (subscription and client
// level), permission errors, tokens and the disconnect codes the SDK surfaces.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  Clients, ENGINES, FILE_NAMESPACES, UUID_RE, WAIT_MS, channel, connToken, now, rejection, sign,
  startRollcall, withTimeout,
} from './harness.mjs';

/** How long the app backend behind getToken takes in the refresh tests (ms). */
const backendLatency = () => new Promise((res) => setTimeout(res, 1000));

for (const engine of ENGINES) {
  const server = await startRollcall(engine);
  after(() => server.stop?.());

  describe(`centrifuge SDK, ${engine} engine`, () => {
    let clients;
    before(() => { clients = new Clients(server); });
    afterEach(() => clients.closeAll());

    it('connects with a token and reports the client id', async () => {
      const c = await clients.client({ token: connToken('alice') });
      const ctx = c.rec.all('connected')[0];
      assert.match(ctx.client, UUID_RE);
      assert.equal(ctx.transport, 'websocket');
      assert.equal(c.state, 'connected');
    });

    it('subscribes and reads presence and presence_stats through the subscription and the client', async () => {
      const ch = channel('chat');
      const alice = await clients.client({ token: connToken('alice', { info: { name: 'Alice' } }) }, { label: 'alice' });
      const bob = await clients.client({ token: connToken('bob') }, { label: 'bob' });
      const alice2 = await clients.client({ token: connToken('alice') }, { label: 'alice#2' });
      const subA = await clients.sub(alice, ch);
      await clients.sub(bob, ch);
      await clients.sub(alice2, ch);

      const { clients: members } = await subA.presence();
      const ids = [alice, bob, alice2].map((c) => c.rec.all('connected')[0].client);
      assert.deepEqual(Object.keys(members).sort(), [...ids].sort());
      const a = members[ids[0]];
      assert.equal(a.client, ids[0]);
      assert.equal(a.user, 'alice');
      assert.deepEqual(a.connInfo, { name: 'Alice' });
      assert.equal(members[ids[1]].user, 'bob');
      assert.equal(members[ids[1]].connInfo, undefined, 'no info claim → no conn_info');

      assert.deepEqual(await subA.presenceStats(), { numClients: 3, numUsers: 2 });
      // Client-level calls for a channel the client is subscribed to.
      const viaClient = await bob.presence(ch);
      assert.deepEqual(Object.keys(viaClient.clients).sort(), [...ids].sort());
      assert.deepEqual(await bob.presenceStats(ch), { numClients: 3, numUsers: 2 });
    });

    it('pushes join and leave to subscribers; the joiner gets subscribed before its own join', async () => {
      const ch = channel('chat');
      const alice = await clients.client({ token: connToken('alice') }, { label: 'alice' });
      const bob = await clients.client({ token: connToken('bob', { info: { role: 'guest' } }) }, { label: 'bob' });
      const bobId = bob.rec.all('connected')[0].client;
      const subA = await clients.sub(alice, ch);
      const subB = await clients.sub(bob, ch);

      const join = await subA.rec.wait('join', (j) => j.info.client === bobId, 'for bob');
      assert.equal(join.channel, ch);
      assert.equal(join.info.user, 'bob');
      assert.deepEqual(join.info.connInfo, { role: 'guest' });

      await subB.rec.wait('join', (j) => j.info.client === bobId, 'of bob himself');
      const order = subB.rec.events.map((e) => e.name);
      assert.ok(order.indexOf('subscribed') < order.indexOf('join'),
        `bob's subscribe reply must come before his own join; events: ${order}`);

      subB.unsubscribe();
      const leave = await subA.rec.wait('leave', (l) => l.info.client === bobId, 'after bob unsubscribed');
      assert.equal(leave.info.user, 'bob');
      assert.equal(leave.channel, ch);

      // Leave on disconnect too.
      subB.subscribe();
      const isBob = (x) => x.info.client === bobId;
      await subA.rec.waitNth('join', isBob, 2, 'for bob subscribing again');
      bob.disconnect();
      await subA.rec.waitNth('leave', isBob, 2, 'after bob disconnected');
      assert.deepEqual(await subA.presenceStats(), { numClients: 1, numUsers: 1 });
    });

    it('delivers join/leave only to subscribers that opted in and may see presence', async () => {
      const ch = channel('optin');
      // Authenticated, opted in: gets pushes (allow_presence_for_subscriber).
      const watcher = await clients.client({ token: connToken('watcher') }, { label: 'watcher' });
      const subW = await clients.sub(watcher, ch, { joinLeave: true });
      // Authenticated, not opted in: nothing.
      const quiet = await clients.client({ token: connToken('quiet') }, { label: 'quiet' });
      const subQ = await clients.sub(quiet, ch);
      // Anonymous (sub ""), opted in, but presence is not allowed for anonymous: nothing.
      const anon = await clients.client({ token: connToken('') }, { label: 'anonymous' });
      const subN = await clients.sub(anon, ch, { joinLeave: true });

      const joiner = await clients.client({ token: connToken('joiner') }, { label: 'joiner' });
      const joinerId = joiner.rec.all('connected')[0].client;
      const subJ = await clients.sub(joiner, ch);
      await subW.rec.wait('join', (j) => j.info.client === joinerId, 'for the joiner');
      subJ.unsubscribe();
      await subW.rec.wait('leave', (l) => l.info.client === joinerId, 'for the joiner');

      // Barrier: a round trip on each silent connection after the pushes were fanned out;
      // any push queued for them would have arrived before these replies.
      await quiet.presenceStats(ch);
      // The same round trip checks that anonymous subscribers get no presence here either.
      const denied = await rejection(anon.presenceStats(ch), 'presence_stats for an anonymous subscriber');
      assert.equal(denied.code, 103);
      assert.deepEqual(subQ.rec.all('join').concat(subQ.rec.all('leave')), [],
        'a subscriber that did not ask for join_leave got pushes');
      assert.deepEqual(subN.rec.all('join').concat(subN.rec.all('leave')), [],
        'an anonymous subscriber without presence permission got pushes');
    });

    it('surfaces server-side subscriptions (token channels) and their join/leave at client level', async () => {
      const ch = channel('chat', 'server-side');
      const first = await clients.client({ token: connToken('first', { channels: [ch] }) }, { label: 'first' });
      const firstId = first.rec.all('connected')[0].client;
      const subscribed = await first.rec.wait('subscribed', (s) => s.channel === ch);
      assert.equal(subscribed.channel, ch);
      // Its own join arrives at client level, after the connect reply.
      await first.rec.wait('join', (j) => j.channel === ch && j.info.client === firstId, 'of itself');

      // A client-side subscriber on the same channel sees server-side subscribers.
      const watcher = await clients.client({ token: connToken('watcher') }, { label: 'watcher' });
      const subW = await clients.sub(watcher, ch);

      // The `subs` claim (which wins over `channels`) carries the channel info: chan_info.
      const second = await clients.client({
        token: connToken('second', { channels: ['chat:ignored'], subs: { [ch]: { info: { seat: 3 } } } }),
      }, { label: 'second' });
      const secondId = second.rec.all('connected')[0].client;
      await second.rec.wait('subscribed', (x) => x.channel === ch);
      const join = await first.rec.wait('join', (j) => j.info.client === secondId, 'for second (client level)');
      assert.equal(join.channel, ch);
      assert.equal(join.info.user, 'second');
      assert.deepEqual(join.info.chanInfo, { seat: 3 });
      await subW.rec.wait('join', (j) => j.info.client === secondId, 'for second (subscription level)');

      // Presence for a server-side subscription is allowed (allow_presence_for_subscriber).
      const { clients: members } = await first.presence(ch);
      assert.deepEqual(Object.keys(members).sort(),
        [firstId, secondId, watcher.rec.all('connected')[0].client].sort());

      second.disconnect();
      const leave = await first.rec.wait('leave', (l) => l.info.client === secondId, 'for second (client level)');
      assert.equal(leave.channel, ch);
      assert.equal(leave.info.user, 'second');
      await subW.rec.wait('leave', (l) => l.info.client === secondId, 'for second (subscription level)');
    });

    it('rejects a subscribe to a closed namespace with 103 and to an unknown namespace with 102', async () => {
      const c = await clients.client({ token: connToken('alice') });
      const closed = await clients.sub(c, channel('closed'), {}, { subscribe: false });
      closed.subscribe();
      const u1 = await closed.rec.wait('unsubscribed');
      assert.equal(u1.code, 103);
      assert.equal(u1.reason, 'permission denied');

      const unknown = await clients.sub(c, channel('nosuchns'), {}, { subscribe: false });
      unknown.subscribe();
      const u2 = await unknown.rec.wait('unsubscribed');
      assert.equal(u2.code, 102);
      assert.equal(u2.reason, 'unknown channel');
      assert.equal(c.state, 'connected', 'the connection stays open after subscribe errors');
    });

    it('subscribes to a closed namespace with a subscription token, whose info becomes chan_info', async () => {
      const ch = channel('closed');
      const c = await clients.client({ token: connToken('alice') });
      const id = c.rec.all('connected')[0].client;
      let asked = 0;
      const s = await clients.sub(c, ch, {
        getToken: async (ctx) => {
          asked += 1;
          assert.equal(ctx.channel, ch);
          return sign({ sub: 'alice', channel: ch, info: { seat: 7 }, exp: now() + 3600 });
        },
      });
      assert.equal(asked, 1);
      const { clients: members } = await s.presence();
      assert.deepEqual(members[id].chanInfo, { seat: 7 });
      assert.equal(members[id].user, 'alice');
    });

    it('answers presence errors: 103 without permission, 102 unknown namespace, 108 presence off', async () => {
      const c = await clients.client({ token: connToken('alice') });
      const ch = channel('nopresperm');
      await clients.sub(c, ch); // subscribed, but the namespace grants no presence permission
      const e1 = await rejection(c.presence(ch), 'presence without permission');
      assert.equal(e1.code, 103);
      const e2 = await rejection(c.presenceStats(ch), 'presence_stats without permission');
      assert.equal(e2.code, 103);
      // Not subscribed to a chat channel: allow_presence_for_subscriber does not apply.
      const e3 = await rejection(c.presence(channel('chat')), 'presence of a chat channel not subscribed to');
      assert.equal(e3.code, 103);
      const e4 = await rejection(c.presence(channel('nosuchns')), 'presence in an unknown namespace');
      assert.equal(e4.code, 102);
      const e5 = await rejection(c.presence(channel('nopresence')), 'presence where it is off');
      assert.equal(e5.code, 108);
      // allow_presence_for_client: readable without subscribing.
      assert.deepEqual(await c.presenceStats(channel('lobby')), { numClients: 0, numUsers: 0 });
      assert.equal(c.state, 'connected');
    });

    it('disconnects with terminal 3500 on an invalid token, without reconnecting', async () => {
      const c = await clients.client({ token: sign({ sub: 'mallory' }, 'wrong-secret') }, { connect: false });
      c.connect();
      const d = await c.rec.wait('disconnected');
      assert.equal(d.code, 3500);
      assert.equal(d.reason, 'invalid token');
      assert.equal(c.state, 'disconnected');
      assert.equal(c.rec.all('connected').length, 0);
    });

    it('disconnects with terminal 3501 when connecting without a token (anonymous not allowed)', async () => {
      const c = await clients.client({}, { connect: false });
      c.connect();
      const d = await c.rec.wait('disconnected');
      assert.equal(d.code, 3501);
      assert.equal(c.state, 'disconnected');
    });

    it('gets a new token through getToken when the connection token expired (109)', async () => {
      let calls = 0;
      const c = await clients.client({
        token: connToken('alice', { exp: now() - 10 }),
        getToken: async () => { calls += 1; return connToken('alice'); },
      }, { connect: false });
      c.connect();
      const err = await c.rec.wait('error', (e) => e.type === 'connect');
      assert.equal(err.error.code, 109);
      await c.rec.wait('connected');
      assert.equal(calls, 1);
    });

    it('ends as unauthorized when the token expired and there is no getToken', async () => {
      const c = await clients.client({ token: connToken('alice', { exp: now() - 10 }) }, { connect: false });
      c.connect();
      const d = await c.rec.wait('disconnected');
      assert.equal(d.code, 1, `expected the SDK's 'unauthorized' (1), got ${d.code} ${d.reason}`);
      assert.equal(c.rec.all('error', (e) => e.error.code === 109).length, 1);
    });

    it('refreshes an expiring connection through getToken and stays connected', async () => {
      // Token lifetime 2 s: the SDK calls getToken when the ttl of the connect reply runs out
      // and sends `refresh` with the result. getToken here takes 1 s, as a call to an app
      // backend may: Centrifugo keeps an expired connection open for a grace period (25 s by
      // default) so that this refresh lands. The SDK calls getToken a second time only after
      // the refresh reply (with a new ttl) arrived, or after a reconnect (checked below).
      let calls = 0;
      let secondCall;
      const second = new Promise((res) => { secondCall = res; });
      const c = await clients.client({
        token: connToken('alice', { exp: now() + 2 }),
        getToken: async () => {
          calls += 1;
          if (calls === 2) secondCall();
          else await backendLatency();
          return connToken('alice', { exp: now() + 2 });
        },
      }, { label: 'refreshing' });
      const id = c.rec.all('connected')[0].client;
      const ch = channel('chat');
      const s = await clients.sub(c, ch);
      await withTimeout(second, 8000, `getToken not called for a second refresh (events: ${c.rec.events.map((e) => e.name)})`);
      const drops = c.rec.all('connecting').filter((x) => x.code !== 0);
      assert.deepEqual(drops, [],
        'the server dropped the connection instead of taking the refresh the SDK sends when the ' +
        'ttl of the connect reply runs out (Centrifugo keeps an expired connection open for a ' +
        `grace period so that this refresh can land); drops: ${JSON.stringify(drops)}`);
      await c.presenceStats(ch); // a round trip after the second refresh went out
      assert.equal(c.state, 'connected');
      assert.equal(c.rec.all('connected').length, 1);
      assert.equal(c.rec.all('connected')[0].client, id);
      assert.equal(s.state, 'subscribed');
    });
    it('stays connected across server pings (the SDK answers each with a pong)', async () => {
      // The servers ping every second and close with 3012 when a pong is missing, or 3501
      // when a pong was not asked for: 2.5 s span two pings.
      const c = await clients.client({ token: connToken('alice') }, { label: 'pinged' });
      await c.rec.none('connecting', (x) => x.code !== 0, 2500, 'during 2.5 s of server pings');
      assert.equal(c.state, 'connected');
      assert.equal(c.rec.all('connected').length, 1);
    });

    it('sends the subscribes made before connect in one batch and all succeed', async () => {
      const c = await clients.client({ token: connToken('alice') }, { connect: false, label: 'batcher' });
      const chans = [channel('chat'), channel('lobby'), channel('optin')];
      const subs = [];
      for (const ch of chans) subs.push(await clients.sub(c, ch, {}, { subscribe: false }));
      for (const s of subs) s.subscribe();
      c.connect();
      for (const s of subs) await s.rec.wait('subscribed');
      const stats = await Promise.all(chans.map((ch) => c.presenceStats(ch)));
      assert.deepEqual(stats, chans.map(() => ({ numClients: 1, numUsers: 1 })));
    });

    it('refreshes an expiring subscription token through getToken and stays subscribed', async () => {
      // As for connections: the SDK sends `sub_refresh` when the subscribe reply's ttl runs
      // out; Centrifugo gives the subscription a grace period (25 s) after `exp` for it.
      const ch = channel('closed');
      const c = await clients.client({ token: connToken('alice') }, { label: 'sub-refresher' });
      let calls = 0;
      let secondCall;
      const second = new Promise((res) => { secondCall = res; });
      const s = await clients.sub(c, ch, {
        getToken: async () => {
          calls += 1;
          if (calls === 2) await backendLatency(); // the refresh; the subscribe itself is fast
          if (calls === 3) secondCall();
          return sign({ sub: 'alice', channel: ch, exp: now() + 2 });
        },
      });
      await withTimeout(second, 8000, `getToken not called for a second refresh (events: ${s.rec.events.map((e) => e.name)})`);
      const drops = s.rec.all('subscribing').filter((x) => x.code !== 0).concat(s.rec.all('unsubscribed'));
      assert.deepEqual(drops, [],
        'the server unsubscribed instead of taking the sub_refresh the SDK sends when the ttl ' +
        `of the subscribe reply runs out; resubscribes: ${JSON.stringify(drops)}`);
      await s.presenceStats();
      assert.equal(s.state, 'subscribed');
      assert.equal(s.rec.all('subscribed').length, 1);
    });

    it('unsubscribes with code 2000 when the namespace disappears from the namespaces file', async () => {
      const ch = channel('hot');
      const c = await clients.client({ token: connToken('alice') });
      const s = await clients.sub(c, ch);
      server.writeNamespacesFile(FILE_NAMESPACES.filter((n) => n.name !== 'hot'));
      const u = await s.rec.wait('unsubscribed', () => true, 'after the namespace was removed');
      assert.equal(u.code, 2000);
      assert.equal(s.state, 'unsubscribed');
      assert.equal(c.state, 'connected', 'the connection stays');
      const e = await rejection(c.presence(ch), 'presence in the removed namespace');
      assert.equal(e.code, 102);
    });

    it('reconnects after a graceful shutdown closes with 3001', async () => {
      const own = await startRollcall(engine);
      try {
        const owned = new Clients(own);
        const c = await owned.client({ token: connToken('alice') }, { label: 'shutdown' });
        const exited = own.terminate();
        const ctx = await c.rec.wait('connecting', (x) => x.code !== 0, 'after SIGTERM');
        assert.equal(ctx.code, 3001);
        assert.equal(ctx.reason, 'shutdown');
        const status = await withTimeout(exited, WAIT_MS, 'rollcall did not exit after SIGTERM');
        assert.equal(status.code, 0, `exit status ${JSON.stringify(status)}; log:\n${own.log()}`);
        owned.closeAll();
      } finally {
        await own.stop();
      }
    });
  });
}
