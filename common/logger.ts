// Structured JSON logs (pino). Secrets are redacted by key wherever they appear in a logged object, so a
// careless `log.info({ config })` cannot leak a password, key or token.
import pino, { type Logger } from 'pino';

export type { Logger };

const REDACT_PATHS = [
  'password',
  '*.password',
  'secret',
  '*.secret',
  'secretAccessKey',
  '*.secretAccessKey',
  '*.*.secretAccessKey',
  'aws_secret_access_key',
  '*.aws_secret_access_key',
  'jwtSecret',
  '*.jwtSecret',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'privateKey',
  '*.privateKey',
  'url',
  '*.url',
];

export function createLogger(service: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  // Presigned URLs carry a signature; they are redacted like any other credential.
  return pino({ name: service, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } });
}
