// Integration tests share one real stack (infra/stack.ts), started once by test/global-setup.ts; they run in band.
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  globalSetup: '<rootDir>/test/global-setup.ts',
  testTimeout: 120000,
  reporters: ['default', '<rootDir>/test/summary-reporter.js'],
  // Temporal's native bridge keeps a handle open after teardown (sdk-typescript#928).
  forceExit: true,
};
