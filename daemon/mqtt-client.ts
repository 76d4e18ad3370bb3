// The daemon's MQTT client: one connection at a time, reconnected with jittered exponential backoff for as long
// as the daemon runs (also after a refused CONNACK: a robot's password may be fixed on the broker later).
// - QoS 1 publishes stay in `inflight` until their PUBACK, and are sent again (DUP) after every reconnect, so a
//   report the broker never acknowledged is not lost with the connection.
// - Incoming messages are handled one at a time, in order, and a QoS 1 message is acknowledged only after its
//   handler finished: a deploy is in the journal before the broker forgets it (with a persistent session the broker
//   sends it again if the connection drops before the PUBACK).
// - Keepalive: a PINGREQ every keepalive interval; no PINGRESP by the next one means a dead link, closed and redialed.
import { dialer, type Dialer, type Link } from './mqtt-link';
import {
  encodeConnect,
  encodeDisconnect,
  encodePingreq,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  PacketReader,
  type ConnectOptions,
  type Packet,
  type QoS,
} from './mqtt-packets';

export interface IncomingMessage {
  topic: string;
  payload: Buffer;
  qos: number;
}

export interface MqttClientOptions extends ConnectOptions {
  url: string;
  ca?: Buffer;
  connectTimeoutMs?: number;
  /** First reconnect delay; doubled per failed attempt up to `reconnectMaxMs`, each randomized in [½, 1]×. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Replaces the TCP/TLS/WebSocket dialer (tests). */
  dial?: Dialer;
  onConnect?: (sessionPresent: boolean) => void;
  /** The connection was lost (or never came up); a reconnect is scheduled. */
  onOffline?: (err?: Error) => void;
  onError?: (err: Error) => void;
  onMessage: (msg: IncomingMessage) => Promise<void>;
}

export class MqttError extends Error {
  override name = 'MqttError';
  constructor(
    message: string,
    readonly code?: number,
  ) {
    super(message);
  }
}

interface Inflight {
  packet: (dup: boolean) => Buffer;
  resolve: () => void;
  reject: (e: Error) => void;
}

interface PendingSuback {
  resolve: (codes: number[]) => void;
  reject: (e: Error) => void;
}

export class MqttClient {
  /** True between CONNACK (accepted) and the loss of that connection. */
  connected = false;
  private link: Link | null = null;
  /** Counts connections, so a late handler of an old connection cannot ack on a new one. */
  private generation = 0;
  private ended = false;
  private attempts = 0;
  private nextId = 0;
  private readonly inflight = new Map<number, Inflight>();
  private readonly subacks = new Map<number, PendingSuback>();
  private inbox: Promise<void> = Promise.resolve();
  private reconnectTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private readonly dial: Dialer;

  constructor(private readonly o: MqttClientOptions) {
    this.dial = o.dial ?? dialer(o.ca);
  }

  start(): void {
    this.open();
  }

  /** QoS 0: written if connected, else dropped. QoS 1: resolves on PUBACK, kept and resent across reconnects. */
  publish(topic: string, payload: string | Buffer, opts: { qos: QoS; retain?: boolean }): Promise<void> {
    if (this.ended) return Promise.reject(new MqttError('client ended'));
    const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
    const retain = opts.retain ?? false;
    const v = this.o.protocolVersion;
    if (opts.qos === 0) {
      if (this.connected) this.send(encodePublish(v, { topic, payload: body, qos: 0, retain, dup: false }));
      return Promise.resolve();
    }
    const packetId = this.allocateId();
    return new Promise<void>((resolve, reject) => {
      const packet = (dup: boolean) => encodePublish(v, { topic, payload: body, qos: 1, retain, dup, packetId });
      this.inflight.set(packetId, { packet, resolve, reject });
      if (this.connected) this.send(packet(false));
    });
  }

  /** Resolves with the granted QoS per topic; rejects if the broker refuses one or the connection drops first. */
  subscribe(subs: { topic: string; qos: QoS }[]): Promise<number[]> {
    if (!this.connected) return Promise.reject(new MqttError('not connected'));
    const packetId = this.allocateId();
    return new Promise<number[]>((resolve, reject) => {
      this.subacks.set(packetId, {
        resolve: (codes) => {
          const refused = codes.findIndex((c) => c >= 0x80);
          if (refused >= 0) reject(new MqttError(`subscription to ${subs[refused]?.topic} refused`, codes[refused]));
          else resolve(codes);
        },
        reject,
      });
      this.send(encodeSubscribe(this.o.protocolVersion, packetId, subs));
    });
  }

  /** Clean DISCONNECT (the broker discards the Will), no more reconnects; unacknowledged publishes are rejected. */
  async end(timeoutMs = 3000): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    for (const p of this.inflight.values()) p.reject(new MqttError('client ended'));
    this.inflight.clear();
    const link = this.link;
    if (link && this.connected) {
      // Wait (bounded) for the socket to flush DISCONNECT and close; a destroy could drop it and fire the Will.
      await new Promise<void>((resolve) => {
        this.closed = resolve;
        setTimeout(resolve, timeoutMs).unref();
        link.end(encodeDisconnect());
      });
    }
    this.closed = null;
    this.closeLink();
  }

  /** Set by end() while it waits for the link to close. */
  private closed: (() => void) | null = null;

  private allocateId(): number {
    // Packet ids 1..65535, skipping ones still waiting for their ack.
    for (let i = 0; i < 0xffff; i++) {
      this.nextId = (this.nextId % 0xffff) + 1;
      if (!this.inflight.has(this.nextId) && !this.subacks.has(this.nextId)) return this.nextId;
    }
    throw new MqttError('no free packet id (65535 messages unacknowledged)');
  }

  private send(bytes: Buffer): void {
    this.link?.write(bytes);
  }

  private open(): void {
    if (this.ended) return;
    const generation = ++this.generation;
    const reader = new PacketReader(this.o.protocolVersion);
    const mine = () => generation === this.generation;
    let link: Link;
    try {
      link = this.dial(new URL(this.o.url), {
        open: () => {
          if (!mine()) return;
          link.write(encodeConnect(this.o));
        },
        data: (bytes) => {
          if (!mine()) return;
          let packets: Packet[];
          try {
            packets = reader.push(bytes);
          } catch (e) {
            this.o.onError?.(e as Error);
            return this.lost(generation, e as Error);
          }
          for (const p of packets) this.handle(generation, p);
        },
        close: (err) => this.lost(generation, err),
      });
    } catch (e) {
      this.o.onError?.(e as Error);
      return this.lost(generation, e as Error);
    }
    this.link = link;
    this.connectTimer = setTimeout(() => {
      if (mine() && !this.connected) this.lost(generation, new MqttError('no CONNACK in time'));
    }, this.o.connectTimeoutMs ?? 10_000);
  }

  private handle(generation: number, p: Packet): void {
    switch (p.type) {
      case 'connack': {
        if (this.connectTimer) clearTimeout(this.connectTimer);
        if (p.reasonCode !== 0) {
          const err = new MqttError(`connection refused by the broker (reason code ${p.reasonCode})`, p.reasonCode);
          this.o.onError?.(err);
          return this.lost(generation, err);
        }
        this.connected = true;
        this.attempts = 0;
        this.startPing(generation, p.serverKeepalive ?? this.o.keepaliveSeconds);
        // Unacknowledged QoS 1 publishes go again, oldest first (Map keeps insertion order).
        for (const f of this.inflight.values()) this.send(f.packet(true));
        this.o.onConnect?.(p.sessionPresent);
        return;
      }
      case 'publish': {
        const { topic, payload, qos, packetId } = p;
        this.inbox = this.inbox
          .then(() => this.o.onMessage({ topic, payload, qos }))
          .catch((e: unknown) => this.o.onError?.(e as Error))
          .then(() => {
            // Acked only on the connection it came on; after a reconnect the broker redelivers it instead.
            if (qos > 0 && packetId !== undefined && generation === this.generation && this.connected) this.send(encodePuback(packetId));
          });
        return;
      }
      case 'puback': {
        const f = this.inflight.get(p.packetId);
        if (!f) return;
        this.inflight.delete(p.packetId);
        if (p.reasonCode >= 0x80) f.reject(new MqttError(`publish refused by the broker (reason code ${p.reasonCode})`, p.reasonCode));
        else f.resolve();
        return;
      }
      case 'suback': {
        const s = this.subacks.get(p.packetId);
        this.subacks.delete(p.packetId);
        s?.resolve(p.reasonCodes);
        return;
      }
      case 'pingresp':
        this.awaitingPong = false;
        return;
      case 'disconnect':
        return this.lost(generation, new MqttError(`disconnected by the broker (reason code ${p.reasonCode})`, p.reasonCode));
      default:
        return;
    }
  }

  private awaitingPong = false;

  private startPing(generation: number, keepaliveSeconds: number): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.awaitingPong = false;
    if (keepaliveSeconds <= 0) return;
    this.pingTimer = setInterval(() => {
      if (generation !== this.generation) return;
      if (this.awaitingPong) return this.lost(generation, new MqttError('no PINGRESP within the keepalive interval'));
      this.awaitingPong = true;
      this.send(encodePingreq());
    }, keepaliveSeconds * 1000);
    this.pingTimer.unref();
  }

  private closeLink(): void {
    this.generation++;
    this.connected = false;
    for (const t of [this.pingTimer, this.connectTimer]) if (t) clearTimeout(t);
    this.pingTimer = this.connectTimer = null;
    const link = this.link;
    this.link = null;
    link?.destroy();
    for (const s of this.subacks.values()) s.reject(new MqttError('connection lost before SUBACK'));
    this.subacks.clear();
  }

  /** The connection `generation` is gone: clean up once and schedule the next attempt. */
  private lost(generation: number, err?: Error): void {
    if (this.ended) this.closed?.();
    if (generation !== this.generation || this.ended) return;
    this.closeLink();
    this.o.onOffline?.(err);
    const min = this.o.reconnectMinMs ?? 1000;
    const max = this.o.reconnectMaxMs ?? 30_000;
    const delay = Math.min(max, min * 2 ** Math.min(this.attempts, 16)) * (0.5 + Math.random() / 2);
    this.attempts++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.open();
    }, delay);
  }
}
