// The daemon's MQTT codec (daemon/mqtt-packets.ts) and WebSocket framing (daemon/mqtt-link.ts): exact bytes of
// the packets it sends, and a reader that copes with packets split across (or packed into) socket chunks.
import { encodeClientFrame, FrameReader } from '../../daemon/mqtt-link';
import {
  decodePacket,
  decodeVarint,
  encodeConnect,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  encodeVarint,
  MqttProtocolError,
  PacketReader,
  type Packet,
} from '../../daemon/mqtt-packets';

const hex = (b: Buffer) => b.toString('hex');

describe('remaining length (variable byte integer)', () => {
  test.each([
    [0, '00'],
    [127, '7f'],
    [128, '8001'],
    [16_383, 'ff7f'],
    [16_384, '808001'],
    [2_097_151, 'ffff7f'],
    [2_097_152, '80808001'],
    [268_435_455, 'ffffff7f'],
  ])('%i ⇄ %s', (n, bytes) => {
    expect(hex(encodeVarint(n))).toBe(bytes);
    expect(decodeVarint(Buffer.from(bytes, 'hex'), 0)).toEqual({ value: n, length: bytes.length / 2 });
  });

  test('out of range values are refused, a truncated one is "not yet", a fifth byte is malformed', () => {
    expect(() => encodeVarint(268_435_456)).toThrow(RangeError);
    expect(() => encodeVarint(-1)).toThrow(RangeError);
    expect(decodeVarint(Buffer.from('ff ff'.replace(/ /g, ''), 'hex'), 0)).toBeNull();
    expect(() => decodeVarint(Buffer.from('ffffffff01', 'hex'), 0)).toThrow(MqttProtocolError);
  });
});

describe('packets the daemon sends', () => {
  test('MQTT 5 CONNECT with credentials, persistent session, session expiry and a retained QoS 1 Will', () => {
    const bytes = encodeConnect({
      protocolVersion: 5,
      clientId: 'r1',
      clean: false,
      keepaliveSeconds: 30,
      username: 'r1',
      password: 'pw',
      sessionExpirySeconds: 604800,
      will: { topic: 'p', payload: Buffer.from('off'), qos: 1, retain: true },
    });
    expect(hex(bytes)).toBe(
      [
        '10', '25', // CONNECT, remaining length 37
        '00044d515454', '05', // "MQTT", version 5
        'ec', // user name, password, will retain, will QoS 1, will flag; clean start off
        '001e', // keepalive 30
        '05', '11', '00093a80', // properties: session expiry 604800
        '00027231', // client id "r1"
        '00', '000170', '00036f6666', // will properties (none), will topic "p", will payload "off"
        '00027231', '00027077', // user name "r1", password "pw"
      ].join(''),
    );
  });

  test('MQTT 3.1.1 CONNECT with a clean session has no properties', () => {
    const bytes = encodeConnect({ protocolVersion: 4, clientId: 'x', clean: true, keepaliveSeconds: 60 });
    expect(hex(bytes)).toBe('100d' + '00044d515454' + '04' + '02' + '003c' + '000178');
  });

  test('PUBLISH QoS 1 with DUP and retain, QoS 0, PUBACK, SUBSCRIBE', () => {
    expect(hex(encodePublish(5, { topic: 'a/b', payload: Buffer.from('hi'), qos: 1, retain: true, dup: true, packetId: 7 }))).toBe(
      '3b' + '0a' + '0003612f62' + '0007' + '00' + '6869',
    );
    expect(hex(encodePublish(4, { topic: 't', payload: Buffer.from('x'), qos: 0, retain: false, dup: false }))).toBe('3004' + '000174' + '78');
    expect(() => encodePublish(5, { topic: 't', payload: Buffer.alloc(0), qos: 1, retain: false, dup: false })).toThrow(/packet id/);
    expect(hex(encodePuback(258))).toBe('40020102');
    expect(hex(encodeSubscribe(5, 1, [{ topic: 'a', qos: 1 }, { topic: 'b', qos: 0 }]))).toBe('820b' + '0001' + '00' + '00016101' + '00016200');
  });
});

describe('packets the daemon receives', () => {
  test('MQTT 5 CONNACK: session present, reason code, server keepalive among other properties', () => {
    const props = Buffer.concat([
      Buffer.from('1f0002', 'hex'), Buffer.from('ok'), // reason string
      Buffer.from('130014', 'hex'), // server keepalive 20
      Buffer.from('26', 'hex'), Buffer.from('0001', 'hex'), Buffer.from('k'), Buffer.from('0001', 'hex'), Buffer.from('v'), // user property
      Buffer.from('2101f4', 'hex'), // receive maximum
    ]);
    const body = Buffer.concat([Buffer.from([0x01, 0x00]), encodeVarint(props.length), props]);
    expect(decodePacket(5, 0x20, body)).toEqual({ type: 'connack', sessionPresent: true, reasonCode: 0, serverKeepalive: 20 });
    expect(decodePacket(4, 0x20, Buffer.from([0x00, 0x05]))).toEqual({ type: 'connack', sessionPresent: false, reasonCode: 5 });
  });

  test('MQTT 5 PUBLISH with properties: topic, packet id, flags and payload', () => {
    const props = Buffer.from('0200000e10' + '0b05', 'hex'); // message expiry, subscription identifier
    const body = Buffer.concat([Buffer.from('0003612f62', 'hex'), Buffer.from('0102', 'hex'), encodeVarint(props.length), props, Buffer.from('{"a":1}')]);
    expect(decodePacket(5, 0x3a, body)).toEqual({ type: 'publish', topic: 'a/b', packetId: 258, qos: 1, dup: true, retain: false, payload: Buffer.from('{"a":1}') });
  });

  test('PUBACK with and without a reason code, SUBACK, DISCONNECT; a truncated packet is malformed', () => {
    expect(decodePacket(5, 0x40, Buffer.from('0007', 'hex'))).toEqual({ type: 'puback', packetId: 7, reasonCode: 0 });
    expect(decodePacket(5, 0x40, Buffer.from('000787', 'hex'))).toEqual({ type: 'puback', packetId: 7, reasonCode: 0x87 });
    expect(decodePacket(5, 0x90, Buffer.from('0003' + '00' + '0180', 'hex'))).toEqual({ type: 'suback', packetId: 3, reasonCodes: [1, 0x80] });
    expect(decodePacket(5, 0xe0, Buffer.from('8e', 'hex'))).toEqual({ type: 'disconnect', reasonCode: 0x8e });
    expect(() => decodePacket(5, 0x32, Buffer.from('0005ab', 'hex'))).toThrow(MqttProtocolError);
  });

  test('a reader cuts packets split byte by byte, packed together, and with multi-byte remaining lengths', () => {
    const big = Buffer.alloc(200_000, 7); // remaining length takes 3 bytes
    const stream = Buffer.concat([
      encodePublish(5, { topic: 'ota/r1/deploy', payload: Buffer.from('{"job_id":"j"}'), qos: 1, retain: false, dup: false, packetId: 1 }),
      Buffer.from('d000', 'hex'), // PINGRESP
      encodePublish(5, { topic: 'big', payload: big, qos: 0, retain: false, dup: false }),
      Buffer.from('40020009', 'hex'),
    ]);
    const expected = (ps: Packet[]) => {
      expect(ps.map((p) => p.type)).toEqual(['publish', 'pingresp', 'publish', 'puback']);
      expect(ps[0]).toMatchObject({ topic: 'ota/r1/deploy', packetId: 1, payload: Buffer.from('{"job_id":"j"}') });
      expect((ps[2] as { payload: Buffer }).payload.equals(big)).toBe(true);
      expect(ps[3]).toEqual({ type: 'puback', packetId: 9, reasonCode: 0 });
    };
    expected(new PacketReader(5).push(stream));
    // Byte by byte for the first 40 bytes (splits inside the fixed header and varint), then odd-sized chunks.
    const reader = new PacketReader(5);
    const out: Packet[] = [];
    let at = 0;
    for (; at < 40; at++) out.push(...reader.push(stream.subarray(at, at + 1)));
    while (at < stream.length) {
      out.push(...reader.push(stream.subarray(at, at + 4093)));
      at += 4093;
    }
    expected(out);
  });

  test('a packet larger than the limit is refused before it is buffered', () => {
    const reader = new PacketReader(5, 1000);
    expect(() => reader.push(Buffer.from([0x30, 0xe9, 0x07]))).toThrow(/exceeds/);
  });
});

describe('websocket frames', () => {
  test('client frames are masked; the reader unmasks and reassembles frames split across chunks', () => {
    for (const size of [5, 300, 70_000]) {
      const payload = Buffer.alloc(size, 0x5a);
      const frame = encodeClientFrame(2, payload);
      expect(frame[0]).toBe(0x82);
      expect(frame[1] & 0x80).toBe(0x80);
      const reader = new FrameReader();
      const got = [...reader.push(frame.subarray(0, 3)), ...reader.push(frame.subarray(3, 9)), ...reader.push(frame.subarray(9))];
      expect(got).toHaveLength(1);
      expect(got[0].opcode).toBe(2);
      expect(got[0].payload.equals(payload)).toBe(true);
    }
    // An unmasked server frame and a ping in one chunk.
    const r = new FrameReader();
    expect(r.push(Buffer.from('820361626389026869', 'hex'))).toEqual([
      { opcode: 2, payload: Buffer.from('abc') },
      { opcode: 9, payload: Buffer.from('hi') },
    ]);
  });
});
