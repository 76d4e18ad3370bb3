// The stack probe's activities (one per real part: database, S3, MQTT, a robot's sshd), composed from their
// factories; shared by the worker and the foundation tests so both run exactly the same wiring.
import type { S3Client } from '@aws-sdk/client-s3';
import type { Connection } from 'mongoose';
import type { Config } from '../common/config';
import type { RobotDirectory } from '../common/robot-directory';
import { createDbProbeActivities } from '../activities/db/probe';
import { createMqttProbeActivities } from '../activities/mqtt/probe';
import { createS3ProbeActivities } from '../activities/s3/probe';
import { createSshProbeActivities } from '../activities/ssh/probe';

export function createStackProbeActivities(deps: { cfg: Config; db: Connection; s3: S3Client; robots: RobotDirectory }) {
  const { cfg, db, s3, robots } = deps;
  return {
    ...createDbProbeActivities(db),
    ...createS3ProbeActivities(s3, cfg.s3.buckets[0]),
    ...createMqttProbeActivities({
      robotUrl: cfg.mqtt.url,
      cloudUrl: cfg.mqtt.cloudUrl,
      cloud: { username: cfg.mqtt.username, password: cfg.mqtt.password },
      robots,
    }),
    ...createSshProbeActivities(robots),
  };
}
