// Stands in for the `socks` package in the daemon bundle (daemon/build.ts): mqtt.js only loads it for a SOCKS
// proxy, which robots do not use; the real package and its dependencies cost ~200 KB of bundle and RSS.
export const SocksClient = {
  createConnection(): never {
    throw new Error('SOCKS proxies are not supported by the OTA daemon bundle');
  },
};
