// MQTT control packets, only those the daemon exchanges (MQTT 5, with 3.1.1 as the older dialect): CONNECT/CONNACK,
// SUBSCRIBE/SUBACK, PUBLISH QoS 0/1 and PUBACK, PINGREQ/PINGRESP, DISCONNECT. Pure functions, unit-tested
// (test/daemon/mqtt-packets.test.ts); the connection logic is in mqtt-client.ts. Written for the daemon instead of
// bundling mqtt.js, whose streams, websocket and worker-timer dependencies cost the robot several MB of RSS.
// Spec: https://docs.oasis-open.org/mqtt/mqtt/v5.0/mqtt-v5.0.html (§2 packet format, §3 the packets).

export type ProtocolVersion = 4 | 5;
export type QoS = 0 | 1;

export const PacketType = {
  CONNECT: 1,
  CONNACK: 2,
  PUBLISH: 3,
  PUBACK: 4,
  SUBSCRIBE: 8,
  SUBACK: 9,
  PINGREQ: 12,
  PINGRESP: 13,
  DISCONNECT: 14,
} as const;

export class MqttProtocolError extends Error {
  override name = 'MqttProtocolError';
}

/** Largest value a Variable Byte Integer can carry (§1.5.5): 4 bytes of 7 bits. */
export const MAX_VARINT = 268_435_455;

export function encodeVarint(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > MAX_VARINT) throw new RangeError(`varint out of range: ${n}`);
  const bytes: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    bytes.push(b);
  } while (n > 0);
  return Buffer.from(bytes);
}

/** The value and its byte length, or null when `buf` ends before the last byte. Throws on a 5-byte varint. */
export function decodeVarint(buf: Buffer, at: number): { value: number; length: number } | null {
  let value = 0;
  let mult = 1;
  for (let i = 0; i < 4; i++) {
    if (at + i >= buf.length) return null;
    const b = buf[at + i];
    value += (b & 0x7f) * mult;
    if ((b & 0x80) === 0) return { value, length: i + 1 };
    mult *= 128;
  }
  throw new MqttProtocolError('malformed remaining length (more than 4 bytes)');
}

const utf8 = (s: string): Buffer => {
  const b = Buffer.from(s, 'utf8');
  if (b.length > 0xffff) throw new RangeError('MQTT string longer than 65535 bytes');
  return Buffer.concat([u16(b.length), b]);
};
const binary = (b: Buffer): Buffer => {
  if (b.length > 0xffff) throw new RangeError('MQTT binary field longer than 65535 bytes');
  return Buffer.concat([u16(b.length), b]);
};
function u16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(n);
  return b;
}
function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
}

function packet(firstByte: number, ...body: Buffer[]): Buffer {
  const rest = Buffer.concat(body);
  return Buffer.concat([Buffer.from([firstByte]), encodeVarint(rest.length), rest]);
}

/** MQTT 5 properties block: its length as a varint, then the properties (only those the daemon sends). */
const properties = (v: ProtocolVersion, ...props: Buffer[]): Buffer[] => (v === 5 ? [encodeVarint(props.reduce((n, p) => n + p.length, 0)), ...props] : []);

export interface ConnectOptions {
  protocolVersion: ProtocolVersion;
  clientId: string;
  /** Clean Start (v5) / Clean Session (3.1.1). */
  clean: boolean;
  keepaliveSeconds: number;
  username?: string;
  password?: string;
  /** v5 only: how long the broker keeps the session (and queued QoS 1 messages) after a disconnect. */
  sessionExpirySeconds?: number;
  will?: { topic: string; payload: Buffer; qos: QoS; retain: boolean };
}

export function encodeConnect(o: ConnectOptions): Buffer {
  const v = o.protocolVersion;
  let flags = o.clean ? 0x02 : 0;
  if (o.will) flags |= 0x04 | (o.will.qos << 3) | (o.will.retain ? 0x20 : 0);
  if (o.password !== undefined) flags |= 0x40;
  if (o.username !== undefined) flags |= 0x80;
  const connectProps = v === 5 && o.sessionExpirySeconds ? [Buffer.from([0x11]), u32(o.sessionExpirySeconds)] : [];
  return packet(
    PacketType.CONNECT << 4,
    utf8('MQTT'),
    Buffer.from([v, flags]),
    u16(o.keepaliveSeconds),
    ...properties(v, ...connectProps),
    utf8(o.clientId),
    ...(o.will ? [...properties(v), utf8(o.will.topic), binary(o.will.payload)] : []),
    ...(o.username !== undefined ? [utf8(o.username)] : []),
    ...(o.password !== undefined ? [binary(Buffer.from(o.password, 'utf8'))] : []),
  );
}

export function encodePublish(
  v: ProtocolVersion,
  p: { topic: string; payload: Buffer; qos: QoS; retain: boolean; dup: boolean; packetId?: number },
): Buffer {
  if (p.qos > 0 && !p.packetId) throw new RangeError('a QoS 1 publish needs a packet id');
  const first = (PacketType.PUBLISH << 4) | (p.dup ? 0x08 : 0) | (p.qos << 1) | (p.retain ? 0x01 : 0);
  return packet(first, utf8(p.topic), ...(p.qos > 0 ? [u16(p.packetId!)] : []), ...properties(v), p.payload);
}

/** PUBACK without a reason code: "success" in v5 (§3.4.2.1), the only form in 3.1.1. */
export const encodePuback = (packetId: number): Buffer => packet(PacketType.PUBACK << 4, u16(packetId));

export function encodeSubscribe(v: ProtocolVersion, packetId: number, subs: { topic: string; qos: QoS }[]): Buffer {
  // SUBSCRIBE's fixed-header flags must be 0b0010 (§3.8.1).
  return packet((PacketType.SUBSCRIBE << 4) | 0x02, u16(packetId), ...properties(v), ...subs.flatMap((s) => [utf8(s.topic), Buffer.from([s.qos])]));
}

export const encodePingreq = (): Buffer => Buffer.from([PacketType.PINGREQ << 4, 0]);
/** DISCONNECT, reason "normal disconnection" (the broker then discards the Will). */
export const encodeDisconnect = (): Buffer => Buffer.from([PacketType.DISCONNECT << 4, 0]);

export type Packet =
  | { type: 'connack'; sessionPresent: boolean; reasonCode: number; serverKeepalive?: number }
  | { type: 'publish'; topic: string; payload: Buffer; qos: number; retain: boolean; dup: boolean; packetId?: number }
  | { type: 'puback'; packetId: number; reasonCode: number }
  | { type: 'suback'; packetId: number; reasonCodes: number[] }
  | { type: 'pingresp' }
  | { type: 'disconnect'; reasonCode: number }
  | { type: 'other'; packetType: number };

/** Reads fields of one packet's body, throwing (malformed packet) instead of reading past its end. */
class Cursor {
  constructor(
    readonly b: Buffer,
    public at = 0,
  ) {}
  need(n: number): void {
    if (this.at + n > this.b.length) throw new MqttProtocolError('packet shorter than its fields');
  }
  byte(): number {
    this.need(1);
    return this.b[this.at++];
  }
  u16(): number {
    this.need(2);
    const v = this.b.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  string(): string {
    return this.bytes(this.u16()).toString('utf8');
  }
  varint(): number {
    const v = decodeVarint(this.b, this.at);
    if (!v) throw new MqttProtocolError('packet shorter than its fields');
    this.at += v.length;
    return v.value;
  }
  /** v5 properties: returns the few the daemon acts on, skips the rest by the block's length. */
  properties(): { serverKeepalive?: number } {
    const length = this.varint();
    const end = this.at + length;
    this.need(length);
    const out: { serverKeepalive?: number } = {};
    const props = new Cursor(this.b.subarray(this.at, end));
    while (props.at < props.b.length) {
      const id = props.varint();
      if (id === 0x13) out.serverKeepalive = props.u16();
      else skipProperty(props, id);
    }
    this.at = end;
    return out;
  }
  rest(): Buffer {
    const v = this.b.subarray(this.at);
    this.at = this.b.length;
    return v;
  }
}

// Property identifier → value type (§2.2.2.2).
const PROP_BYTE = [0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2a];
const PROP_U16 = [0x13, 0x21, 0x22, 0x23];
const PROP_U32 = [0x02, 0x11, 0x18, 0x27];
const PROP_STRING = [0x03, 0x08, 0x12, 0x15, 0x1a, 0x1c, 0x1f];
const PROP_BINARY = [0x09, 0x16];

function skipProperty(c: Cursor, id: number): void {
  if (PROP_BYTE.includes(id)) c.bytes(1);
  else if (PROP_U16.includes(id)) c.bytes(2);
  else if (PROP_U32.includes(id)) c.bytes(4);
  else if (id === 0x0b) c.varint();
  else if (PROP_STRING.includes(id) || PROP_BINARY.includes(id)) c.bytes(c.u16());
  else if (id === 0x26) {
    c.bytes(c.u16());
    c.bytes(c.u16());
  } else throw new MqttProtocolError(`unknown property 0x${id.toString(16)}`);
}

export function decodePacket(v: ProtocolVersion, first: number, body: Buffer): Packet {
  const type = first >> 4;
  const c = new Cursor(body);
  switch (type) {
    case PacketType.CONNACK: {
      const sessionPresent = (c.byte() & 0x01) === 1;
      const reasonCode = c.byte();
      const props = v === 5 && c.at < body.length ? c.properties() : {};
      return { type: 'connack', sessionPresent, reasonCode, ...props };
    }
    case PacketType.PUBLISH: {
      const qos = (first >> 1) & 0x03;
      if (qos === 3) throw new MqttProtocolError('PUBLISH with QoS 3');
      const topic = c.string();
      const packetId = qos > 0 ? c.u16() : undefined;
      if (v === 5) c.properties();
      return { type: 'publish', topic, qos, packetId, retain: (first & 0x01) === 1, dup: (first & 0x08) !== 0, payload: c.rest() };
    }
    case PacketType.PUBACK: {
      const packetId = c.u16();
      return { type: 'puback', packetId, reasonCode: c.at < body.length ? c.byte() : 0 };
    }
    case PacketType.SUBACK: {
      const packetId = c.u16();
      if (v === 5) c.properties();
      return { type: 'suback', packetId, reasonCodes: [...c.rest()] };
    }
    case PacketType.PINGRESP:
      return { type: 'pingresp' };
    case PacketType.DISCONNECT:
      return { type: 'disconnect', reasonCode: c.at < body.length ? c.byte() : 0 };
    default:
      return { type: 'other', packetType: type };
  }
}

/**
 * Cuts a byte stream into packets: bytes arrive in arbitrary chunks (a packet split across reads, or several in
 * one read), and a packet is decoded only once its whole body is there.
 */
export class PacketReader {
  private pending: Buffer = Buffer.alloc(0);

  constructor(
    private readonly version: ProtocolVersion,
    /** Refuses packets larger than this (a broken or hostile peer cannot make the daemon buffer without limit). */
    private readonly maxPacketBytes = 1 << 20,
  ) {}

  push(chunk: Buffer): Packet[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Packet[] = [];
    for (;;) {
      if (this.pending.length < 2) break;
      const len = decodeVarint(this.pending, 1);
      if (!len) break;
      if (len.value > this.maxPacketBytes) throw new MqttProtocolError(`packet of ${len.value} bytes exceeds the ${this.maxPacketBytes}-byte limit`);
      const start = 1 + len.length;
      if (this.pending.length < start + len.value) break;
      // Copy the body: the decoded payload must not pin the whole (possibly large) read buffer.
      const body = Buffer.from(this.pending.subarray(start, start + len.value));
      out.push(decodePacket(this.version, this.pending[0], body));
      this.pending = this.pending.subarray(start + len.value);
    }
    if (this.pending.length === 0) this.pending = Buffer.alloc(0);
    return out;
  }
}
