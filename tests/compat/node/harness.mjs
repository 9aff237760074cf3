// Shared harness of the node compat suite: starts a real `rollcall serve` (and, for the NATS
// engine, a real `nats-server`), signs tokens, creates real `centrifuge` clients, and waits for
// SDK events with bounded waits that fail with a clear message.

import { spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));

// The test runner fails the running test on an unhandled rejection, showing only its value
// (often an SDK error object without a stack): say where it came from.
process.on('unhandledRejection', (reason) => {
  console.error(`# unhandled rejection (from inside the SDK unless a test forgot an await): ${JSON.stringify(reason)}`);
});
export const REPO = resolve(here, '../../..');
export const ROLLCALL_BIN = process.env.ROLLCALL_BIN || join(REPO, 'target/debug/rollcall');
export const NATS_SERVER = process.env.NATS_SERVER || 'nats-server';

export const API_KEY = 'compat-api-key';
export const SECRET = 'compat-token-secret';
/** How long any single wait lasts before the test fails. */
export const WAIT_MS = 5000;

/**
 * Namespaces every suite run configures. Each exercises one rule of client-protocol.md.
 * - chat:     the `make run` namespace: presence, join/leave pushed to every subscriber.
 * - optin:    join/leave only to subscribers that ask (`joinLeave: true`) and may see presence
 *             (authenticated users: allow_presence_for_subscriber, not for anonymous).
 * - closed:   presence on, but nobody may subscribe without a subscription token.
 * - nopresperm: anyone may subscribe, nobody may query presence.
 * - nopresence: presence off (108).
 * - lobby:    presence readable by any connected client without subscribing.
 * The namespaces file (hot reloaded) adds `hot`, which a test removes again.
 */
/** The namespaces file each server starts with. */
export const FILE_NAMESPACES = [
  {
    name: 'hot', presence: true, join_leave: true, force_push_join_leave: true,
    allow_subscribe_for_client: true, allow_presence_for_subscriber: true,
  },
];

/** Server ping interval of every test server: short, so every test also runs through pings. */
export const PING_INTERVAL = '1s';

export const NAMESPACES = [
  {
    name: 'chat', presence: true, join_leave: true, force_push_join_leave: true,
    allow_subscribe_for_client: true, allow_presence_for_subscriber: true,
  },
  {
    name: 'optin', presence: true, join_leave: true, allow_subscribe_for_client: true,
    allow_subscribe_for_anonymous: true, allow_presence_for_subscriber: true,
  },
  {
    name: 'closed', presence: true, join_leave: true, force_push_join_leave: true,
    allow_presence_for_subscriber: true,
  },
  { name: 'nopresperm', presence: true, allow_subscribe_for_client: true },
  { name: 'nopresence', allow_subscribe_for_client: true, allow_presence_for_client: true },
  { name: 'lobby', presence: true, allow_subscribe_for_client: true, allow_presence_for_client: true },
];

/** A unique channel in `ns` so tests never see each other's clients. */
export function channel(ns, label = 'room') {
  return `${ns}:${label}-${randomUUID().slice(0, 8)}`;
}

// ---------------------------------------------------------------- tokens

function b64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** An HS256 JWT with `claims`, signed with `secret` (the server's key by default). */
export function sign(claims, secret = SECRET) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export const now = () => Math.floor(Date.now() / 1000);

/** A connection token for `user`, valid for an hour unless `claims.exp` says otherwise. */
export function connToken(user, claims = {}) {
  return sign({ sub: user, exp: now() + 3600, ...claims });
}

// ---------------------------------------------------------------- processes

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function untilDeadline(deadline, probe, what, log) {
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`${what}${log ? `; log:\n${log()}` : ''}`);
    await sleep(25); // polling a process that offers no event to await
  }
}

function tcpOpen(port) {
  return new Promise((res) => {
    const s = tcpConnect({ host: '127.0.0.1', port });
    s.on('connect', () => { s.destroy(); res(true); });
    s.on('error', () => res(false));
  });
}

/** A child process whose output is kept for failure messages and which can be killed. */
class Proc {
  constructor(cmd, args, env) {
    this.output = '';
    this.exited = null;
    this.child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d) => { this.output += d.toString(); };
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    // Never outlive the test process, even when it ends without running its `after` hooks.
    const reap = () => { if (!this.exited) this.child.kill('SIGKILL'); };
    process.once('exit', reap);
    this.exitPromise = new Promise((res) => {
      this.child.on('exit', (code, sig) => { this.exited = { code, sig }; res(this.exited); });
      this.child.on('error', (err) => { this.output += `spawn error: ${err.message}\n`; this.exited = { code: -1 }; res(this.exited); });
    });
  }

  async kill() {
    if (this.exited) return;
    this.child.kill('SIGKILL');
    await this.exitPromise;
  }
}

/** A `nats-server` on a free loopback port. */
export async function startNats() {
  const port = await freePort();
  const proc = new Proc(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(port)], {});
  await untilDeadline(Date.now() + 10000, async () => {
    if (proc.exited) throw new Error(`nats-server exited (${JSON.stringify(proc.exited)}):\n${proc.output}`);
    return tcpOpen(port);
  }, `nats-server did not listen on 127.0.0.1:${port} within 10s`, () => proc.output);
  return { url: `nats://127.0.0.1:${port}`, proc, stop: () => proc.kill() };
}

/**
 * Starts `rollcall serve` with the compat config and `engine` ('memory' | 'nats'), waits for
 * `/ready`. Returns { url, ws, api, stop, log }; a server that exits or never gets ready fails
 * the suite.
 */
export async function startRollcall(engine) {
  const dir = mkdtempSync(join(tmpdir(), 'rollcall-compat-node-'));
  let nats = null;
  const nsFile = join(dir, 'namespaces.json');
  writeFileSync(nsFile, JSON.stringify({ namespaces: FILE_NAMESPACES }));
  const config = {
    http_server: { address: '127.0.0.1' },
    http_api: { key: API_KEY },
    // No allowed_origins: node clients send no Origin header, which the default allows.
    client: { token: { hmac_secret_key: SECRET }, ping_interval: PING_INTERVAL, pong_timeout: '2s' },
    channel: { namespaces: NAMESPACES, namespaces_file: nsFile },
    engine: { type: engine },
    shutdown: { timeout: '3s' },
    log: { level: 'info' },
  };
  if (engine === 'nats') {
    nats = await startNats();
    config.engine.nats = { url: nats.url, prefix: `compat${randomUUID().slice(0, 8)}` };
  }
  const path = join(dir, 'rollcall.json');
  writeFileSync(path, JSON.stringify(config, null, 2));
  const port = await freePort();
  const proc = new Proc(ROLLCALL_BIN, ['serve', '--config', path], {
    ROLLCALL_HTTP_SERVER_PORT: String(port),
    NO_COLOR: '1',
    RUST_LOG: '',
  });
  const base = `http://127.0.0.1:${port}`;
  const cleanup = async () => {
    await proc.kill();
    if (nats) await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await untilDeadline(Date.now() + 20000, async () => {
      if (proc.exited) {
        throw new Error(`rollcall serve (engine ${engine}) exited ${JSON.stringify(proc.exited)}:\n${proc.output}`);
      }
      try {
        const r = await fetch(`${base}/ready`);
        return r.status === 200;
      } catch {
        return false;
      }
    }, `rollcall serve (engine ${engine}) not ready on ${base} within 20s`, () => proc.output);
  } catch (e) {
    await cleanup();
    throw e;
  }
  return {
    engine,
    base,
    api: `${base}/api`,
    ws: `ws://127.0.0.1:${port}/connection/websocket`,
    log: () => proc.output,
    stop: cleanup,
    /** SIGTERM: graceful shutdown. Resolves when the process exited. */
    terminate: () => { proc.child.kill('SIGTERM'); return proc.exitPromise; },
    /** Replaces the namespaces file the way Kubernetes does: a new file renamed over it. */
    writeNamespacesFile: (namespaces) => {
      const tmp = `${nsFile}.tmp`;
      writeFileSync(tmp, JSON.stringify({ namespaces }));
      renameSync(tmp, nsFile);
    },
  };
}

// ---------------------------------------------------------------- clients and events

/**
 * Records every event of an emitter (a Centrifuge or a Subscription) and lets a test await
 * the next one matching a predicate. Events already seen count, so there is no race between
 * an action and the wait that follows it.
 */
export class Recorder {
  constructor(emitter, names, label) {
    this.label = label;
    this.events = [];
    this.waiters = [];
    for (const name of names) {
      emitter.on(name, (ctx) => {
        const ev = { name, ctx };
        this.events.push(ev);
        this.waiters = this.waiters.filter((w) => !w.offer(ev));
      });
    }
  }

  /** Events named `name` (optionally matching `pred`) seen so far. */
  all(name, pred = () => true) {
    return this.events.filter((e) => e.name === name && pred(e.ctx)).map((e) => e.ctx);
  }

  /**
   * Resolves after `ms` if no event named `name` matching `pred` happened (before or during);
   * rejects as soon as one does. For properties of a span of time (e.g. surviving pings).
   */
  none(name, pred, ms, what) {
    const bad = () => new Error(`${this.label}: unexpected '${name}' event ${what}: ${JSON.stringify(this.all(name, pred))}`);
    if (this.all(name, pred).length) return Promise.reject(bad());
    return new Promise((res, rej) => {
      const waiter = { offer: (ev) => {
        if (ev.name !== name || !pred(ev.ctx)) return false;
        clearTimeout(timer);
        rej(bad());
        return true;
      } };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        res();
      }, ms);
      this.waiters.push(waiter);
    });
  }

  /** The first event named `name` matching `pred` (past or future), within WAIT_MS. */
  wait(name, pred = () => true, what = '') {
    return this.waitNth(name, pred, 1, what);
  }

  /** The `n`-th event named `name` matching `pred` (past or future), within WAIT_MS. */
  waitNth(name, pred, n, what = '') {
    const seen = this.events.filter((e) => e.name === name && pred(e.ctx));
    if (seen.length >= n) return Promise.resolve(seen[n - 1].ctx);
    let count = seen.length;
    return new Promise((res, rej) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        const names = this.events.map((e) => `${e.name}${e.ctx && e.ctx.code !== undefined ? `(${e.ctx.code})` : ''}`);
        rej(new Error(`${this.label}: no '${name}' event #${n} ${what} within ${WAIT_MS} ms; events so far: [${names.join(', ')}]`));
      }, WAIT_MS);
      const waiter = {
        offer: (ev) => {
          if (ev.name !== name || !pred(ev.ctx)) return false;
          count += 1;
          if (count < n) return false;
          clearTimeout(timer);
          res(ev.ctx);
          return true;
        },
      };
      this.waiters.push(waiter);
    });
  }
}

const CLIENT_EVENTS = ['connecting', 'connected', 'disconnected', 'error', 'subscribed',
  'subscribing', 'unsubscribed', 'join', 'leave', 'publication'];
const SUB_EVENTS = ['subscribing', 'subscribed', 'unsubscribed', 'error', 'join', 'leave', 'publication'];

/** Everything a test opened, closed in `closeAll`. */
export class Clients {
  constructor(server) {
    this.server = server;
    this.open = [];
  }

  /**
   * A real `centrifuge` client (WebSocket from `ws`) with a Recorder as `.rec`. Not yet
   * connected unless `connect` is true (then waits for 'connected').
   */
  async client(options = {}, { connect = true, label = 'client' } = {}) {
    const c = new Centrifuge(this.server.ws, {
      websocket: WebSocket,
      minReconnectDelay: 100,
      maxReconnectDelay: 1000,
      timeout: WAIT_MS,
      ...options,
    });
    c.rec = new Recorder(c, CLIENT_EVENTS, label);
    this.open.push(c);
    if (connect) {
      c.connect();
      await c.rec.wait('connected');
    }
    return c;
  }

  /** A subscription with a Recorder; subscribed (awaited) unless `subscribe` is false. */
  async sub(client, ch, options = {}, { subscribe = true } = {}) {
    const s = client.newSubscription(ch, options);
    s.rec = new Recorder(s, SUB_EVENTS, `${client.rec.label}/${ch}`);
    if (subscribe) {
      s.subscribe();
      await s.rec.wait('subscribed');
    }
    return s;
  }

  closeAll() {
    for (const c of this.open) c.disconnect();
    this.open = [];
  }
}

/** Engines every scenario runs against. */
export const ENGINES = ['memory', 'nats'];

/** `promise`, or a rejection naming `what` after `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** `promise` must reject; returns the rejection value for further checks. */
export async function rejection(promise, what) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  throw new Error(`${what}: expected a rejection, got success`);
}

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
