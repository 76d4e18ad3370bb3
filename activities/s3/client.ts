// One way to build the S3 client for every process. Non-AWS servers (versitygw locally) need path-style
// addressing, and the SDK's default CRC checksums are switched to "when required" because not every
// S3-compatible server implements them; the project verifies sha256 end to end itself.
import { S3Client } from '@aws-sdk/client-s3';
import type { Config } from '../../common/config';

export function createS3Client(cfg: Config): S3Client {
  return new S3Client({
    endpoint: cfg.s3.endpoint,
    region: cfg.s3.region,
    forcePathStyle: cfg.s3.forcePathStyle,
    credentials: { accessKeyId: cfg.s3.accessKeyId, secretAccessKey: cfg.s3.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}
