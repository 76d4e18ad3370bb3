// The daemon's MQTT side: a persistent MQTT 5 session (client id = user name = robot id) so QoS 1 deploys
// sent while the robot is offline wait at the broker; retained presence with a Last Will; every incoming
// message handled inside a try/catch so one bad payload can never stop the loop (the reference's could).
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { MqttClient, type IncomingMessage } from './mqtt-client';
import type { Dialer } from './mqtt-link';
import { checkDeployMessage, PRESENCE_OFFLINE, PRESENCE_ONLINE, topics, type JobReport } from '../common/ota-wire';
import type { DaemonLogger as Logger } from './log';
import type { DaemonConfig } from './config';
import type { DeployEnv } from './deploy-job';
import { KeyedMutex } from './fs-util';
import { JobManager } from './jobs';
import { Journal } from './journal';
import { realRoots } from './paths';
import { StateReporter } from './reporter';
import { presignGetObject } from './sigv4';
import { parsePublicKeys, verifyDeploy } from '../common/signing';

/** Job ids arrive as bare strings on ack/cancel; anything longer or non-printable is not one of ours. */
const JOB_ID_PATTERN = /^[\x21-\x7e]{1,200}$/;

export interface DaemonOptions {
  /** Replaces the broker dialer (tests). */
  dial?: Dialer;
  /**
   * Called after the first connect's setup and whenever the last running job finished: a quiet moment in which
   * the process may return memory (main.ts runs a GC there).
   */
  onQuiet?: () => void;
  /** Download retry policy (tests shorten it). */
  retry?: DeployEnv['retry'];
}

function s3Presigner(config: DaemonConfig): DeployEnv['presign'] {
  const { accessKeyId, secretAccessKey, endpoint, region } = config.s3;
  if (!accessKeyId || !secretAccessKey) return undefined;
  // Presigning locally keeps one download path (Range / If-Range over plain HTTP) for both message kinds.
  return async (bucket, key) => presignGetObject({ accessKeyId, secretAccessKey, endpoint, region }, bucket, key, 3600);
}

export class OtaDaemon {
  private client: MqttClient | null = null;
  private jobs: JobManager | null = null;
  private reporter: StateReporter | null = null;
  private stopped = false;
  /** Whether the last connection got as far as CONNACK (a lost connection is a warning, a failed dial is not). */
  private wasConnected = false;
  /** Null: drop-in mode (no keys in the config), unsigned deploys accepted as by the reference daemon. */
  private readonly signingKeys: ReturnType<typeof parsePublicKeys> | null;

  constructor(
    private readonly config: DaemonConfig,
    private readonly log: Logger,
    private readonly opts: DaemonOptions = {},
  ) {
    this.signingKeys = config.signingPublicKeys.length > 0 ? parsePublicKeys(config.signingPublicKeys) : null;
  }

  async start(): Promise<void> {
    const { config, log } = this;
    // Also done by checkDaemonPaths in main.ts; repeated for embedders (bench/daemon-host.ts) that skip it.
    await fsp.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
    const journal = await Journal.open(config.stateDir, log);
    const [roots, forbidden] = await Promise.all([realRoots(config.allowedRoots), realRoots([config.stateDir])]);
    const reporter = new StateReporter({
      publish: () => this.publishState(),
      heartbeatMs: config.reportIntervalMs,
      onHeartbeat: () => void this.jobs?.maintain().catch((e: unknown) => log.error({ err: e }, 'journal housekeeping failed')),
    });
    this.reporter = reporter;
    this.jobs = new JobManager({
      journal,
      env: {
        roots,
        forbidden,
        locks: new KeyedMutex(),
        log,
        presign: s3Presigner(config),
        retry: this.opts.retry,
        maxBytesPerSecond: config.maxDownloadBytesPerSecond,
      },
      maxConcurrent: config.maxConcurrentJobs,
      log,
      onChange: (kind) => (kind === 'status' ? reporter.statusChanged() : reporter.progressChanged()),
      onReplay: (jobId, report) => this.publishReplay(jobId, report),
      onIdle: this.opts.onQuiet,
    });
    this.jobs.resumeUnfinished();
    this.connect();
    reporter.start();
  }

  private connect(): void {
    const { config, log } = this;
    const presence = topics.presence(config.robotId);
    const client = new MqttClient({
      url: config.mqtt.url,
      protocolVersion: 5,
      clientId: config.robotId,
      username: config.mqtt.username,
      password: config.mqtt.password,
      clean: false,
      sessionExpirySeconds: config.mqtt.sessionExpirySeconds,
      will: { topic: presence, payload: Buffer.from(PRESENCE_OFFLINE), qos: 1, retain: true },
      keepaliveSeconds: 30,
      connectTimeoutMs: 10_000,
      // Jittered backoff (in the client) spreads a fleet's reconnects after a broker restart. A refused CONNACK
      // (bad password, broker busy) is retried too: the broker's password file may be fixed later.
      reconnectMinMs: 1000,
      reconnectMaxMs: 10_000,
      ca: config.mqtt.caFile ? fs.readFileSync(config.mqtt.caFile) : undefined,
      dial: this.opts.dial,
      // Messages are handled one at a time, and the PUBACK is sent only after the handler ran, so a deploy is in
      // the journal before the broker forgets it.
      onMessage: (msg) =>
        this.dispatch(msg).catch((e: unknown) => log.error({ err: e, topic: msg.topic }, 'message handler failed; message dropped')),
      onConnect: (sessionPresent) => {
        log.info({ broker: config.mqtt.url, session_present: sessionPresent }, 'connected to the broker');
        void this.onConnect(presence).catch((e: unknown) => log.warn({ err: e }, 'connect setup failed; retried on the next connect'));
      },
      onOffline: (err) => {
        if (this.wasConnected) log.warn({ err: err ? { message: err.message } : undefined }, 'broker connection lost');
        else log.debug({ err: err ? { message: err.message } : undefined }, 'broker not reachable; retrying');
        this.wasConnected = false;
      },
      onError: (err) => log.warn({ err: { message: err.message, code: (err as { code?: unknown }).code } }, 'mqtt error'),
    });
    this.client = client;
    client.start();
  }

  private async onConnect(presence: string): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.wasConnected = true;
    const id = this.config.robotId;
    // Subscribe before announcing presence: "online" makes the cloud re-dispatch, and those deploys must land.
    await client.subscribe([
      { topic: topics.deploy(id), qos: 1 },
      { topic: topics.ack(id), qos: 1 },
      { topic: topics.cancel(id), qos: 1 },
    ]);
    await client.publish(presence, PRESENCE_ONLINE, { qos: 1, retain: true });
    this.reporter?.publishNow();
    if (!this.settledOnce) {
      this.settledOnce = true;
      this.opts.onQuiet?.();
    }
  }

  private settledOnce = false;

  private async dispatch(packet: IncomingMessage): Promise<void> {
    const jobs = this.jobs;
    if (!jobs) return;
    const id = this.config.robotId;
    const payload = packet.payload.toString('utf8');
    switch (packet.topic) {
      case topics.deploy(id): {
        let json: unknown;
        try {
          json = JSON.parse(payload);
        } catch {
          this.log.warn({ topic: packet.topic, bytes: payload.length }, 'deploy message is not JSON; dropped');
          return;
        }
        const parsed = checkDeployMessage(json);
        if (!parsed.ok) {
          // Issues name fields and rules, never values: the payload may hold a presigned URL.
          this.log.warn({ topic: packet.topic, issues: parsed.issues }, 'deploy message does not match the schema; dropped');
          return;
        }
        const refusal = this.signingKeys ? verifyDeploy(this.signingKeys, id, parsed.value) : null;
        if (refusal) {
          this.log.warn({ job_id: parsed.value.job_id, reason: refusal }, 'deploy refused: signature check failed; nothing is installed');
          await jobs.refuse(parsed.value, refusal);
          return;
        }
        await jobs.deploy(parsed.value);
        return;
      }
      case topics.ack(id):
      case topics.cancel(id): {
        const jobId = payload.trim();
        if (!JOB_ID_PATTERN.test(jobId)) {
          this.log.warn({ topic: packet.topic, bytes: payload.length }, 'payload is not a job id; dropped');
          return;
        }
        await (packet.topic === topics.ack(id) ? jobs.ack(jobId) : jobs.cancel(jobId));
        return;
      }
      default:
        this.log.debug({ topic: packet.topic }, 'message on an unexpected topic ignored');
    }
  }

  private publishState(): void {
    const client = this.client;
    // While offline nothing is queued: the full map goes out on the next connect anyway.
    if (!client?.connected || !this.jobs || this.stopped) return;
    const body = JSON.stringify(this.jobs.stateMap());
    client.publish(topics.state(this.config.robotId), body, { qos: 1 }).catch((err: Error) => {
      this.log.debug({ err: { message: err.message } }, 'state publish not acknowledged');
    });
  }

  private publishReplay(jobId: string, report: JobReport): void {
    const client = this.client;
    if (!client?.connected) return;
    client.publish(topics.state(this.config.robotId), JSON.stringify({ [jobId]: report }), { qos: 1 }).catch(() => undefined);
  }

  /** Stops downloads (resumable), persists the journal, announces `offline` and disconnects. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.reporter?.stop();
    await this.jobs?.stop().catch((e: unknown) => this.log.error({ err: e }, 'could not persist the journal on stop'));
    const client = this.client;
    if (!client) return;
    const withTimeout = <T>(p: Promise<T>, ms: number) =>
      Promise.race([p, new Promise<void>((resolve) => setTimeout(resolve, ms).unref())]);
    if (client.connected) {
      // A clean DISCONNECT suppresses the Last Will, so "offline" is published by hand.
      await withTimeout(
        client.publish(topics.presence(this.config.robotId), PRESENCE_OFFLINE, { qos: 1, retain: true }),
        3000,
      ).catch((e: unknown) => this.log.warn({ err: e }, 'could not publish offline presence'));
    }
    await client.end(3000);
  }

  /** For tests: resolves when no job is queued or running. */
  async idle(): Promise<void> {
    await this.jobs?.idle();
  }
}
