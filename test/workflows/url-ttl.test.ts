import { DEFAULT_URL_TTL_SECONDS, urlTtlForSize } from '../../activities/mqtt/ota';

test('download URLs outlive a slow download of the file, within the 7-day SigV4 limit', () => {
  expect(urlTtlForSize(1024 * 1024, DEFAULT_URL_TTL_SECONDS)).toBe(3600); // small files: the default hour
  const twoGiB = 2 * 1024 ** 3;
  expect(urlTtlForSize(twoGiB, DEFAULT_URL_TTL_SECONDS)).toBe(Math.ceil(twoGiB / (128 * 1024))); // ~4.6 h
  expect(urlTtlForSize(1024 ** 4, DEFAULT_URL_TTL_SECONDS)).toBe(7 * 24 * 3600); // 1 TiB: capped
});
