// Stack probe, S3 part: put an object with a SHA-256 checksum the server must verify, get it back, compare.
import crypto from 'node:crypto';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { activityInfo } from '@temporalio/activity';

export function createS3ProbeActivities(s3: S3Client, bucket: string) {
  return {
    async probeS3(probeId: string): Promise<{ attempt: number; key: string; sha256: string; roundTrip: boolean }> {
      const key = `probes/${probeId}.txt`;
      const body = Buffer.from(`stack probe ${probeId}\n`);
      const digest = crypto.createHash('sha256').update(body).digest();
      // Same key and bytes on a retry: the put is idempotent.
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ChecksumSHA256: digest.toString('base64') }));
      const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const back = Buffer.from(await got.Body!.transformToByteArray());
      const sha256 = crypto.createHash('sha256').update(back).digest('hex');
      return { attempt: activityInfo().attempt, key, sha256, roundTrip: sha256 === digest.toString('hex') };
    },
  };
}
