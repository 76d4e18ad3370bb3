// Integration tests share one real stack (infra/stack.ts), started once by test/global-setup.ts; they run in band.
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.(ts|js)$': ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }] },
  // jose 6 ships ES modules only; jest's CommonJS runtime needs it transpiled (tsx/Node load it natively).
  transformIgnorePatterns: ['/node_modules/(?!jose/)'],
  globalSetup: '<rootDir>/test/global-setup.ts',
  testTimeout: 120000,
  reporters: ['default', '<rootDir>/test/summary-reporter.js'],
  // Temporal's native bridge keeps a handle open after teardown (sdk-typescript#928).
  forceExit: true,
};
