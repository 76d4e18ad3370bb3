// coalesceSftpRequests against a recording stand-in for ssh2's protocol object (unit test: what reaches the
// wire is checked end to end by the upload tests against a real sshd).
import type { SFTPWrapper } from 'ssh2';
import { coalesceSftpRequests } from '../../activities/ssh/connect';

function fakeSftp(packetSize: number) {
  const sent: Array<{ op: 'data' | 'close'; id: number; data?: Buffer }> = [];
  const s = {
    outgoing: { id: 7, packetSize },
    _protocol: {
      channelData: (id: number, data: Buffer) => sent.push({ op: 'data', id, data }),
      channelClose: (id: number) => sent.push({ op: 'close', id }),
    },
  };
  return { s, sent, send: (data: Buffer) => (s._protocol as { channelData(id: number, d: Buffer): void }).channelData(7, data) };
}

const tick = () => new Promise((r) => process.nextTick(r));

test('the requests of one tick leave in as few packets as fit, in order, none larger than the packet size', async () => {
  const f = fakeSftp(1000);
  coalesceSftpRequests(f.s as unknown as SFTPWrapper);
  const requests = Array.from({ length: 25 }, (_, i) => Buffer.alloc(90 + i, i));
  for (const r of requests) f.send(r);
  expect(f.sent).toHaveLength(0); // nothing before the end of the tick
  await tick();
  expect(f.sent.length).toBeGreaterThan(1);
  expect(f.sent.length).toBeLessThan(5);
  for (const p of f.sent) expect(p.data!.length).toBeLessThanOrEqual(1000);
  expect(Buffer.concat(f.sent.map((p) => p.data!))).toEqual(Buffer.concat(requests));
});

test('a payload of a full packet passes on as it is; a close sends what is pending first', async () => {
  const f = fakeSftp(1000);
  coalesceSftpRequests(f.s as unknown as SFTPWrapper);
  const full = Buffer.alloc(1000, 1);
  f.send(Buffer.from('open'));
  f.send(full);
  await tick();
  expect(f.sent.map((p) => p.data!.toString('latin1'))).toEqual(['open', full.toString('latin1')]);
  expect(f.sent[1].data).toBe(full); // no copy
  f.send(Buffer.from('last'));
  (f.s._protocol as { channelClose(id: number): void }).channelClose(7);
  expect(f.sent.slice(2).map((p) => p.op)).toEqual(['data', 'close']);
  expect(f.sent[2].data!.toString()).toBe('last');
});

test("another channel's data is not held back", () => {
  const f = fakeSftp(1000);
  coalesceSftpRequests(f.s as unknown as SFTPWrapper);
  (f.s._protocol as { channelData(id: number, d: Buffer): void }).channelData(9, Buffer.from('x'));
  expect(f.sent).toEqual([{ op: 'data', id: 9, data: Buffer.from('x') }]);
});
