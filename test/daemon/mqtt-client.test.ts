// The daemon's MQTT client (daemon/mqtt-client.ts). First against a scripted broker on a local socket, to control
// what a real broker rarely does on cue (drop a connection before a PUBACK, stop answering pings, refuse a
// CONNACK, cut packets into odd chunks); then against the stack's real Mosquitto over TCP and over WebSocket.
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { MqttClient, type IncomingMessage, type MqttClientOptions } from '../../daemon/mqtt-client';
import { dialer, encodeClientFrame, FrameReader } from '../../daemon/mqtt-link';
import { decodeVarint, encodePublish, type QoS } from '../../daemon/mqtt-packets';
import { cfg, eventually, uniqueId } from '../helpers';

interface Received {
  type: number;
  flags: number;
  body: Buffer;
}

/** One scripted broker connection: every packet the client sent, and a way to answer. */
class BrokerConn {
  readonly packets: Received[] = [];
  private pending = Buffer.alloc(0);
  constructor(readonly socket: net.Socket) {
    socket.on('data', (b: Buffer) => {
      this.pending = Buffer.concat([this.pending, b]);
      for (;;) {
        const len = decodeVarint(this.pending, 1);
        if (!len || this.pending.length < 1 + len.length + len.value) break;
        const start = 1 + len.length;
        this.packets.push({ type: this.pending[0] >> 4, flags: this.pending[0] & 0x0f, body: this.pending.subarray(start, start + len.value) });
        this.pending = this.pending.subarray(start + len.value);
      }
    });
    socket.on('error', () => undefined);
  }
  of(type: number): Received[] {
    return this.packets.filter((p) => p.type === type);
  }
  /** Writes bytes one at a time: the client must reassemble packets split across reads. */
  async trickle(bytes: Buffer): Promise<void> {
    for (const b of bytes) {
      this.socket.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
  }
}

class ScriptedBroker {
  readonly conns: BrokerConn[] = [];
  private readonly server = net.createServer((s) => this.conns.push(new BrokerConn(s)));
  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `mqtt://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }
  async close(): Promise<void> {
    for (const c of this.conns) c.socket.destroy();
    await new Promise((r) => this.server.close(r));
  }
  last(): BrokerConn {
    return this.conns[this.conns.length - 1];
  }
}

const CONNACK_OK = Buffer.from('20030000' + '00', 'hex');
const SUBACK_ID = (id: number, codes: number[]) => Buffer.from([0x90, 3 + codes.length, id >> 8, id & 0xff, 0, ...codes]);
const packetId = (p: Received) => p.body.readUInt16BE(2 + p.body.readUInt16BE(0));

let broker: ScriptedBroker;
const clients: MqttClient[] = [];
beforeEach(() => {
  broker = new ScriptedBroker();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.end(200)));
  await broker.close();
});

function client(url: string, over: Partial<MqttClientOptions> = {}): { c: MqttClient; connects: boolean[]; messages: IncomingMessage[] } {
  const connects: boolean[] = [];
  const messages: IncomingMessage[] = [];
  const c = new MqttClient({
    url,
    protocolVersion: 5,
    clientId: 'robot-x',
    clean: false,
    keepaliveSeconds: 30,
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
    onConnect: (sp) => connects.push(sp),
    onMessage: async (m) => void messages.push(m),
    ...over,
  });
  clients.push(c);
  c.start();
  return { c, connects, messages };
}

describe('against a scripted broker', () => {
  test('unacknowledged QoS 1 publishes are sent again with DUP after a reconnect, in order, and resolve on PUBACK', async () => {
    const url = await broker.listen();
    const { c, connects } = client(url);
    await eventually('CONNECT', async () => broker.conns[0]?.of(1).length === 1);
    await broker.conns[0].trickle(CONNACK_OK);
    await eventually('connected', async () => connects.length === 1);
    let settled = 0;
    const a = c.publish('ota/robot-x/state', '{"a":1}', { qos: 1 }).then(() => settled++);
    const b = c.publish('ota/robot-x/state', '{"b":2}', { qos: 1 }).then(() => settled++);
    await eventually('two publishes', async () => broker.conns[0].of(3).length === 2);
    const first = broker.conns[0].of(3).map((p) => ({ id: packetId(p), flags: p.flags }));
    expect(first.map((p) => p.flags)).toEqual([0x02, 0x02]); // QoS 1, no DUP
    broker.conns[0].socket.destroy(); // lost before any PUBACK
    await eventually('reconnect', async () => broker.conns[1]?.of(1).length === 1);
    expect(broker.conns[1].of(3)).toHaveLength(0); // nothing is sent before CONNACK
    broker.conns[1].socket.write(CONNACK_OK);
    await eventually('resent', async () => broker.conns[1].of(3).length === 2);
    const again = broker.conns[1].of(3);
    expect(again.map((p) => ({ id: packetId(p), flags: p.flags }))).toEqual(first.map((p) => ({ id: p.id, flags: 0x0a }))); // DUP + QoS 1
    expect(again.map((p) => p.body.subarray(p.body.length - 7).toString())).toEqual(['{"a":1}', '{"b":2}']);
    expect(settled).toBe(0);
    for (const p of again) broker.conns[1].socket.write(Buffer.from([0x40, 2, packetId(p) >> 8, packetId(p) & 0xff]));
    await Promise.all([a, b]);
    expect(settled).toBe(2);
  });

  test('incoming QoS 1 messages are handled one at a time, in order, and acknowledged only after their handler', async () => {
    const url = await broker.listen();
    const handled: string[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const { connects } = client(url, {
      onMessage: async (m) => {
        handled.push(`start ${m.payload.toString()}`);
        if (m.payload.toString() === 'one') await gate;
        handled.push(`end ${m.payload.toString()}`);
      },
    });
    await eventually('CONNECT', async () => broker.conns[0]?.of(1).length === 1);
    const conn = broker.conns[0];
    conn.socket.write(CONNACK_OK);
    await eventually('connected', async () => connects.length === 1);
    const pub = (id: number, text: string) => encodePublish(5, { topic: 'ota/robot-x/deploy', payload: Buffer.from(text), qos: 1, retain: false, dup: false, packetId: id });
    // Both publishes in one chunk, the second cut in the middle of its topic.
    const bytes = Buffer.concat([pub(11, 'one'), pub(12, 'two')]);
    conn.socket.write(bytes.subarray(0, 20));
    await new Promise((r) => setTimeout(r, 50));
    conn.socket.write(bytes.subarray(20));
    await new Promise((r) => setTimeout(r, 100));
    expect(handled).toEqual(['start one']);
    expect(conn.of(4)).toHaveLength(0); // no PUBACK while the handler runs
    release();
    await eventually('both acked', async () => conn.of(4).length === 2);
    expect(handled).toEqual(['start one', 'end one', 'start two', 'end two']);
    expect(conn.of(4).map((p) => p.body.readUInt16BE(0))).toEqual([11, 12]);
  });

  test('SUBSCRIBE resolves with the granted QoS and rejects when the broker refuses a topic', async () => {
    const url = await broker.listen();
    const { c, connects } = client(url);
    await eventually('CONNECT', async () => broker.conns[0]?.of(1).length === 1);
    broker.conns[0].socket.write(CONNACK_OK);
    await eventually('connected', async () => connects.length === 1);
    const ok = c.subscribe([{ topic: 'a', qos: 1 }, { topic: 'b', qos: 1 }]);
    await eventually('SUBSCRIBE', async () => broker.conns[0].of(8).length === 1);
    const sub = broker.conns[0].of(8)[0];
    expect(sub.flags).toBe(0x02);
    broker.conns[0].socket.write(SUBACK_ID(sub.body.readUInt16BE(0), [1, 1]));
    await expect(ok).resolves.toEqual([1, 1]);
    const refused = c.subscribe([{ topic: 'secret/#', qos: 1 }]);
    await eventually('second SUBSCRIBE', async () => broker.conns[0].of(8).length === 2);
    broker.conns[0].socket.write(SUBACK_ID(broker.conns[0].of(8)[1].body.readUInt16BE(0), [0x87]));
    await expect(refused).rejects.toThrow(/secret\/# refused/);
  });

  test('a silent broker (no PINGRESP) and a refused CONNACK both lead to new connection attempts', async () => {
    const url = await broker.listen();
    const offline: string[] = [];
    const { connects } = client(url, { keepaliveSeconds: 1, onOffline: (e) => offline.push(e?.message ?? '') });
    await eventually('CONNECT', async () => broker.conns[0]?.of(1).length === 1);
    broker.conns[0].socket.write(Buffer.from('2003000000', 'hex'));
    await eventually('connected', async () => connects.length === 1);
    await eventually('PINGREQ', async () => broker.conns[0].of(12).length === 1, 3000);
    await eventually('gave up on the silent link', async () => broker.conns.length === 2, 4000);
    expect(offline[0]).toMatch(/PINGRESP/);
    // Refused (0x86 bad user name or password): the client keeps trying.
    await eventually('CONNECT 2', async () => broker.conns[1].of(1).length === 1);
    broker.conns[1].socket.write(Buffer.from('2003008600', 'hex'));
    await eventually('third attempt', async () => broker.conns[2]?.of(1).length === 1, 3000);
    expect(offline[1]).toMatch(/reason code 134/);
    broker.conns[2].socket.write(Buffer.from('2003010000', 'hex'));
    await eventually('connected again', async () => connects.length === 2);
    expect(connects).toEqual([false, true]);
  });

  test('end() sends DISCONNECT, rejects what is unacknowledged, and stops reconnecting', async () => {
    const url = await broker.listen();
    const { c, connects } = client(url);
    await eventually('CONNECT', async () => broker.conns[0]?.of(1).length === 1);
    broker.conns[0].socket.write(CONNACK_OK);
    await eventually('connected', async () => connects.length === 1);
    const pending = c.publish('t', 'x', { qos: 1 });
    await c.end(1000);
    await expect(pending).rejects.toThrow(/ended/);
    await eventually('DISCONNECT', async () => broker.conns[0].of(14).length === 1);
    await new Promise((r) => setTimeout(r, 400));
    expect(broker.conns).toHaveLength(1);
    expect(c.connected).toBe(false);
  });
});

describe('against the real Mosquitto (cloud listener)', () => {
  const cloudOptions = (clientId: string, over: Partial<MqttClientOptions> = {}) => ({
    url: cfg.mqtt.cloudUrl,
    username: cfg.mqtt.username,
    password: cfg.mqtt.password,
    clientId,
    clean: true,
    protocolVersion: 5 as const,
    ...over,
  });

  async function connected(url: string, opts: Partial<MqttClientOptions>) {
    const r = client(url, opts);
    await eventually(`${opts.clientId} connected`, async () => r.connects.length > 0, 10000);
    return r;
  }

  test.each([5, 4] as const)('MQTT %s: QoS 1 round trip, a persistent session keeps what arrived while offline, the Will fires on a lost link', async (version) => {
    const base = `ota/mqtt-client-test-${uniqueId('v')}`;
    const sub = await connected(cfg.mqtt.cloudUrl, cloudOptions(uniqueId('sub'), { protocolVersion: version }));
    await sub.c.subscribe([{ topic: `${base}/#`, qos: 1 as QoS }]);

    // A persistent subscriber, and a Will for an abrupt loss.
    const persistentId = uniqueId('persist');
    let cut: () => void = () => undefined;
    const dial = dialer();
    const persist = await connected(
      cfg.mqtt.cloudUrl,
      cloudOptions(persistentId, {
        protocolVersion: version,
        clean: false,
        sessionExpirySeconds: 300,
        will: { topic: `${base}/will`, payload: Buffer.from('gone'), qos: 1, retain: false },
        dial: (u, h) => {
          const link = dial(u, h);
          cut = () => link.destroy();
          return link;
        },
      }),
    );
    await persist.c.subscribe([{ topic: `${base}/queued`, qos: 1 }]);
    await persist.c.publish(`${base}/hello`, 'hi', { qos: 1 });
    await eventually('round trip', async () => sub.messages.some((m) => m.topic === `${base}/hello` && m.payload.toString() === 'hi'));

    cut(); // no DISCONNECT: the broker publishes the Will
    await eventually('will', async () => sub.messages.some((m) => m.topic === `${base}/will` && m.payload.toString() === 'gone'));
    await persist.c.end(100);

    await sub.c.publish(`${base}/queued`, 'while-away', { qos: 1 });
    const back = await connected(cfg.mqtt.cloudUrl, cloudOptions(persistentId, { protocolVersion: version, clean: false, sessionExpirySeconds: 300 }));
    expect(back.connects[0]).toBe(true); // session present
    await eventually('queued message delivered', async () => back.messages.some((m) => m.payload.toString() === 'while-away'));
    // Clean up the session on the broker.
    await back.c.end(500);
    const cleanup = await connected(cfg.mqtt.cloudUrl, cloudOptions(persistentId, { protocolVersion: version, clean: true }));
    await cleanup.c.end(500);
  }, 30000);

  test('over WebSocket (ws://, subprotocol mqtt) through a proxy to the broker', async () => {
    // The stack's broker has no WebSocket listener: this proxy unwraps client frames to its TCP port and frames
    // the broker's bytes back, as a WebSocket listener would.
    const broker = new URL(cfg.mqtt.cloudUrl);
    let upgrades = 0;
    const proxy = http.createServer();
    proxy.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
      upgrades++;
      const accept = crypto.createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC11B65`).digest('base64');
      expect(req.headers['sec-websocket-protocol']).toBe('mqtt');
      expect(req.url).toBe('/mqtt');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n`);
      const upstream = net.connect(Number(broker.port), broker.hostname);
      const frames = new FrameReader();
      socket.on('data', (b: Buffer) => {
        for (const f of frames.push(b)) if (f.opcode === 2) upstream.write(f.payload);
      });
      // Server frames are unmasked: a client frame with the mask bit cleared and its mask key dropped.
      upstream.on('data', (b: Buffer) => {
        const framed = encodeClientFrame(2, b);
        const header = framed[1] & 0x7f;
        const headerLen = header < 126 ? 2 : header === 126 ? 4 : 10;
        const out = Buffer.concat([framed.subarray(0, headerLen), b]);
        out[1] &= 0x7f;
        socket.write(out);
      });
      upstream.on('close', () => socket.destroy());
      socket.on('close', () => upstream.destroy());
      socket.on('error', () => undefined);
      upstream.on('error', () => undefined);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const url = `ws://127.0.0.1:${(proxy.address() as net.AddressInfo).port}/mqtt`;
      const topic = `ota/mqtt-client-test-${uniqueId('ws')}`;
      const ws = await connected(url, cloudOptions(uniqueId('ws'), { url }));
      await ws.c.subscribe([{ topic, qos: 1 }]);
      await ws.c.publish(topic, 'over-ws', { qos: 1 });
      await eventually('ws round trip', async () => ws.messages.some((m) => m.payload.toString() === 'over-ws'));
      expect(upgrades).toBe(1);
      await ws.c.end(500);
    } finally {
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    }
  }, 20000);
});
