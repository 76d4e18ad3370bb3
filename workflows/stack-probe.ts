// Proof that every part of the stack is real and that a workflow survives its worker: one activity per part
// (MongoDB-compatible server, S3, Mosquitto, a robot's sshd). The SSH upload comes last and heartbeats its
// offset, so a worker killed in the middle of it is replaced by a retry that resumes the upload, while the
// steps already completed are not run again (Temporal records their results in the history).
import { proxyActivities } from '@temporalio/workflow';
import type { createDbProbeActivities } from '../activities/db/probe';
import type { createMqttProbeActivities } from '../activities/mqtt/probe';
import type { createS3ProbeActivities } from '../activities/s3/probe';
import type { createSshProbeActivities, SshProbeResult } from '../activities/ssh/probe';

type ProbeActivities = ReturnType<typeof createDbProbeActivities> &
  ReturnType<typeof createS3ProbeActivities> &
  ReturnType<typeof createMqttProbeActivities> &
  ReturnType<typeof createSshProbeActivities>;

const { probeMongo, probeS3, probeMqtt } = proxyActivities<ProbeActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '500 ms', maximumInterval: '5 seconds', maximumAttempts: 5 },
});

const { probeSshUpload } = proxyActivities<ProbeActivities>({
  startToCloseTimeout: '5 minutes',
  // A dead worker stops heartbeating: after 5 s the attempt times out and another worker resumes it.
  heartbeatTimeout: '5 seconds',
  retry: { initialInterval: '500 ms', maximumInterval: '5 seconds', maximumAttempts: 10 },
});

export interface StackProbeInput {
  probeId: string;
  robotId: string;
  uploadBytes: number;
  throttleBytesPerSec?: number;
}

export interface StackProbeResult {
  mongo: Awaited<ReturnType<ProbeActivities['probeMongo']>>;
  s3: Awaited<ReturnType<ProbeActivities['probeS3']>>;
  mqtt: Awaited<ReturnType<ProbeActivities['probeMqtt']>>;
  ssh: SshProbeResult;
}

export async function stackProbe(input: StackProbeInput): Promise<StackProbeResult> {
  const mongo = await probeMongo(input.probeId, input.robotId);
  const s3 = await probeS3(input.probeId);
  const mqtt = await probeMqtt(input.probeId, input.robotId);
  const ssh = await probeSshUpload({
    probeId: input.probeId,
    robotId: input.robotId,
    bytes: input.uploadBytes,
    throttleBytesPerSec: input.throttleBytesPerSec,
  });
  return { mongo, s3, mqtt, ssh };
}
