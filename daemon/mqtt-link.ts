// The byte pipe under the daemon's MQTT client, for each broker URL the config can name (daemon/config.ts
// brokerUrl): mqtt:// (TCP), mqtts:// (TLS), ws:// and wss:// (MQTT over WebSocket, RFC 6455, subprotocol "mqtt").
// The WebSocket side is the few parts a client needs: the upgrade handshake, masked binary frames out, and
// binary/continuation frames in, ping → pong, close. `tls`, `http` and `https` are loaded only by the URLs that
// use them, so a plain-TCP robot does not keep them in memory.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { IncomingMessage } from 'node:http';

export interface Link {
  write(bytes: Buffer): void;
  /** Sends these last bytes, then closes (a clean DISCONNECT); `close` is reported when the peer is gone. */
  end(lastBytes: Buffer): void;
  /** Closes at once; `close` is still reported once. */
  destroy(): void;
}

export interface LinkHandlers {
  open(): void;
  data(bytes: Buffer): void;
  /** Called exactly once per link, whatever ended it. */
  close(err?: Error): void;
}

export type Dialer = (url: URL, handlers: LinkHandlers) => Link;

const DEFAULT_PORTS: Record<string, number> = { 'mqtt:': 1883, 'mqtts:': 8883, 'ws:': 80, 'wss:': 443 };

/** Handlers that fire `close` only once, and nothing after it. */
function once(h: LinkHandlers): LinkHandlers {
  let closed = false;
  return {
    open: () => !closed && h.open(),
    data: (b) => !closed && h.data(b),
    close: (err) => {
      if (closed) return;
      closed = true;
      h.close(err);
    },
  };
}

export function dialer(ca?: Buffer): Dialer {
  return (url, handlers) => {
    const h = once(handlers);
    const port = Number(url.port) || DEFAULT_PORTS[url.protocol];
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (url.protocol === 'ws:' || url.protocol === 'wss:') return webSocket(url, host, port, ca, h);
    if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') throw new Error(`unsupported broker URL scheme ${url.protocol}`);
    let socket: net.Socket;
    if (url.protocol === 'mqtts:') {
      const tls = require('node:tls') as typeof import('node:tls');
      socket = tls.connect({ host, port, ca, servername: net.isIP(host) ? undefined : host }, () => h.open());
    } else {
      socket = net.connect({ host, port }, () => h.open());
    }
    return streamLink(socket, h);
  };
}

function streamLink(socket: net.Socket, h: LinkHandlers): Link {
  let error: Error | undefined;
  socket.setNoDelay(true);
  socket.on('data', (b: Buffer) => h.data(b));
  socket.on('error', (e) => (error = e));
  socket.on('close', () => h.close(error));
  return { write: (b) => void socket.write(b), end: (b) => void socket.end(b), destroy: () => socket.destroy() };
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC11B65';

function webSocket(url: URL, host: string, port: number, ca: Buffer | undefined, h: LinkHandlers): Link {
  const key = randomBytes(16).toString('base64');
  const mod = (url.protocol === 'wss:' ? require('node:https') : require('node:http')) as typeof import('node:https');
  const req = mod.request({
    host,
    port,
    path: `${url.pathname || '/'}${url.search}`,
    ca,
    agent: false,
    headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Protocol': 'mqtt' },
  });
  let socket: net.Socket | null = null;
  let closing = false;
  const writeFrame = (opcode: number, payload: Buffer) => {
    if (!socket || socket.destroyed) return;
    socket.write(encodeClientFrame(opcode, payload));
  };
  req.on('upgrade', (res: IncomingMessage, s: net.Socket, head: Buffer) => {
    socket = s;
    const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
    if (res.headers['sec-websocket-accept'] !== accept) {
      s.destroy();
      return h.close(new Error('websocket handshake: bad Sec-WebSocket-Accept'));
    }
    const frames = new FrameReader();
    const onBytes = (b: Buffer) => {
      let list;
      try {
        list = frames.push(b);
      } catch (e) {
        s.destroy();
        return h.close(e as Error);
      }
      for (const f of list) {
        if (f.opcode === 0 || f.opcode === 1 || f.opcode === 2) h.data(f.payload);
        else if (f.opcode === 9) writeFrame(10, f.payload);
        else if (f.opcode === 8) {
          if (!closing) writeFrame(8, f.payload.subarray(0, 2));
          closing = true;
          s.end();
        }
      }
    };
    let error: Error | undefined;
    s.setNoDelay(true);
    s.on('data', onBytes);
    s.on('error', (e) => (error = e));
    s.on('close', () => h.close(error));
    h.open();
    if (head.length > 0) onBytes(head);
  });
  req.on('response', (res: IncomingMessage) => {
    res.destroy();
    h.close(new Error(`websocket handshake refused: HTTP ${res.statusCode}`));
  });
  req.on('error', (e) => h.close(e));
  req.end();
  return {
    write: (b) => writeFrame(2, b),
    end: (b) => {
      writeFrame(2, b);
      writeFrame(8, Buffer.from([0x03, 0xe8])); // 1000: normal closure
      closing = true;
      if (socket) socket.end();
      else req.destroy();
    },
    destroy: () => {
      if (socket) socket.destroy();
      else req.destroy();
      h.close();
    },
  };
}

/** A client frame: FIN, the opcode, masked payload (clients must mask, RFC 6455 §5.3). */
export function encodeClientFrame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const header = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(header + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else if (len < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(len), 2);
  }
  const mask = randomBytes(4);
  mask.copy(out, header);
  for (let i = 0; i < len; i++) out[header + 4 + i] = payload[i] ^ mask[i & 3];
  return out;
}

/** Cuts the server's byte stream into frames (possibly split across reads); unmasks if the server masked. */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): { opcode: number; payload: Buffer }[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: { opcode: number; payload: Buffer }[] = [];
    for (;;) {
      const b = this.pending;
      if (b.length < 2) break;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        const big = b.readBigUInt64BE(2);
        if (big > BigInt(1 << 24)) throw new Error('websocket frame larger than 16 MiB');
        len = Number(big);
        at = 10;
      }
      const maskAt = at;
      if (masked) at += 4;
      if (b.length < at + len) break;
      const payload = Buffer.from(b.subarray(at, at + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= b[maskAt + (i & 3)];
      out.push({ opcode: b[0] & 0x0f, payload });
      this.pending = b.subarray(at + len);
    }
    if (this.pending.length === 0) this.pending = Buffer.alloc(0);
    return out;
  }
}
