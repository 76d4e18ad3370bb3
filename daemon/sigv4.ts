// A presigned S3 GET (AWS Signature Version 4, query-string auth), for reference-shaped deploy messages that carry
// no URL, on robots whose config was given S3 credentials by hand. ~40 lines of node:crypto instead of the AWS SDK,
// which would triple the daemon bundle and add ~15 MB of RSS for one URL.
// Spec: https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
import crypto from 'node:crypto';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Path-style endpoint (S3-compatible servers); absent: AWS virtual-hosted style. */
  endpoint?: string;
}

/** RFC 3986 encoding as SigV4 wants it: everything but unreserved characters; '/' kept in paths. */
const enc = (s: string, keepSlash = false) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`).replace(keepSlash ? /%2F/g : /$^/, '/');

const hmac = (key: Buffer | string, data: string) => crypto.createHmac('sha256', key).update(data, 'utf8').digest();

export function presignGetObject(c: S3Credentials, bucket: string, key: string, expiresSeconds = 3600, now = new Date()): string {
  const base = c.endpoint ? new URL(c.endpoint) : new URL(`https://${bucket}.s3.${c.region}.amazonaws.com`);
  const prefix = base.pathname.replace(/\/+$/, '');
  const uri = `${prefix}${c.endpoint ? `/${enc(bucket)}` : ''}/${enc(key, true)}`;
  const amzDate = now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const scope = `${day}/${c.region}/s3/aws4_request`;
  const params: Array<[string, string]> = [
    ['X-Amz-Algorithm', 'AWS4-HMAC-SHA256'],
    ['X-Amz-Credential', `${c.accessKeyId}/${scope}`],
    ['X-Amz-Date', amzDate],
    ['X-Amz-Expires', String(expiresSeconds)],
    ['X-Amz-SignedHeaders', 'host'],
  ];
  const query = params
    .map(([k, v]) => `${enc(k)}=${enc(v)}`)
    .sort()
    .join('&');
  const canonical = ['GET', uri, query, `host:${base.host}`, '', 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, crypto.createHash('sha256').update(canonical).digest('hex')].join('\n');
  const signingKey = ['s3', 'aws4_request'].reduce(hmac, hmac(hmac(`AWS4${c.secretAccessKey}`, day), c.region));
  const signature = crypto.createHmac('sha256', signingKey).update(toSign).digest('hex');
  return `${base.protocol}//${base.host}${uri}?${query}&X-Amz-Signature=${signature}`;
}
