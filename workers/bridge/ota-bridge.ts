// The MQTT → Temporal bridge for OTA: robots' state reports become robotReport signals to their job's workflow,
// robots' presence becomes RobotPresence documents and robotPresence signals to the robot's open jobs.
//
// Rules (the reference's failures, notes/ota-file-service.md §6, turned around):
// - A report on ota/B/state can never touch a job of robot A: the job's robot_id must equal the topic's robot.
// - One bad message (not JSON, wrong shape, unknown status, unknown job) is logged and dropped; it never stops
//   the processing of the next one.
// - A report for a job already terminal in the database means the daemon missed its ack: the ack is re-sent.
//
// Delivery: QoS 1 messages are acknowledged to the broker only after they were handled (mqtt.js handleMessage),
// so with a persistent session a bridge that dies mid-message gets it again. Daemons re-send their full state
// map periodically, so a state report given up after transient errors (Temporal or the database down for longer
// than `retryForMs`) converges with the next heartbeat; presence, published once per connection, is retried until
// the bridge stops instead. Identical consecutive reports are not re-signalled (they would only grow histories).
//
// Why lanes: mqtt.js hands a connection's packets over one at a time (the next only after done()), so one
// connection handles one report at a time, and each costs a database read plus a Temporal signal (~20-30 ms):
// a fleet deployment of a few hundred robots was spending most of its time queued here. State reports therefore
// arrive on N "lanes", connections that share the subscription $share/<group>/ota/+/state: the broker spreads
// the messages over them and they are handled in parallel, each lane keeping ack-after-handling on its own
// persistent session (see lanes.ts for what the broker does with an offline lane's share). Reports of one robot
// may now be handled out of order; that is safe because the workflow only ever moves a job forward (a RECEIVED
// after COMPLETED is a no-op, workflows/ota-status.ts) and the database write is guarded the same way.
// Presence stays on a normal subscription of the bridge's main connection: shared subscriptions get no retained
// messages, and presence is retained.
//
// Robots that speak only the reference protocol (its daemon: clean MQTT 3.1.1 session, QoS 0, its state map about
// every second, no presence, no Last Will) are served too: for a robot the bridge has not seen online through its
// presence, a state message is the evidence that it is online (stored as presence), and an open job missing from
// its map is sent again (a presence signal to the job's workflow, which re-dispatches), because a clean session
// misses whatever was published while it was away. Bounded: one check per robot per `aliveCheckMs`, one re-send per
// job per `resendEveryMs`; robots with presence (our daemon: persistent session, Last Will) skip all of it.
import { forEachLimited } from '../../common/limit';
import type { WorkflowClient } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { IPublishPacket, ISubscriptionMap, MqttClient } from 'mqtt';
import type { Logger } from '../../common/logger';
import type { OtaJob, OtaModels } from '../../common/models/ota';
import {
  isTerminal,
  JOB_STATUSES,
  parseTopic,
  PRESENCE_OFFLINE,
  PRESENCE_ONLINE,
  stateMessageSchema,
  topics,
  type JobReport,
  type JobStatus,
} from '../../common/protocol';
import { DEFAULT_DB_TIMEOUT_MS, withDbTimeout } from '../../activities/db/timeout';
import { upsertDeployTarget } from '../../activities/db/ota-jobs';
import { overlayRolloutResults } from '../../activities/db/ota-rollout-results';
import { isSinglesBatch, JobProgressRecorder } from '../../activities/db/ota-job-progress';
import { sharedStateFilter } from './lanes';
import { otaWorkflowId, robotPresenceSignal, robotReportSignal } from '../../workflows/ota-contract';
import { JobLookup } from './job-lookup';
import { PresenceBatch } from './presence-batch';
import { RunningRollouts } from './running-rollouts';
import { RolloutBatcher } from './rollout-batcher';
import type { BridgeMetrics } from './metrics';

/** A state map with more entries than this is not a robot's job list (the daemon runs a handful at a time). */
const MAX_JOBS_PER_REPORT = 500;
const MAX_REMEMBERED_REPORTS = 10_000;
/** A robot's error message is stored and shown to operators; longer ones are cut. */
const MAX_ERROR_MSG = 2000;

/** Map.set that forgets the oldest entry past MAX_REMEMBERED_REPORTS * 5 (a fleet's worth of jobs). */
function boundedSet<K, V>(m: Map<K, V>, k: K, v: V): void {
  m.delete(k);
  m.set(k, v);
  if (m.size > MAX_REMEMBERED_REPORTS * 5) {
    const oldest = m.keys().next().value;
    if (oldest !== undefined) m.delete(oldest);
  }
}

export interface OtaBridgeOptions {
  /**
   * The main connection: presence (a normal subscription, for the retained messages) and ack re-publishes.
   * Not yet connected is fine (and needed for a persistent session): the constructor installs the handler.
   */
  mqtt: MqttClient;
  /** State-report lanes (at least one), same rule as `mqtt`; each subscribes to the group's shared filter. */
  stateLanes: readonly MqttClient[];
  /** Shared-subscription group of the lanes: one per bridge deployment (see shareGroupFor in lanes.ts). */
  shareGroup: string;
  models: Pick<OtaModels, 'OtaJob' | 'OtaJobArchive' | 'RobotPresence' | 'DeployTarget' | 'OtaRolloutResult' | 'OtaJobProgressRow' | 'OtaRollout'>;
  workflows: Pick<WorkflowClient, 'getHandle'>;
  log: Logger;
  dbTimeoutMs?: number;
  /** How long one message step is retried on transient errors (database, Temporal) before it is given up. */
  retryForMs?: number;
  /** Presence fan-out: signals in flight at once. */
  signalConcurrency?: number;
  /** Robots without presence: how often their state map is compared with their open jobs (default 5 s). */
  aliveCheckMs?: number;
  /** A job missing from such a robot's map is sent again at most this often (default 15 s). */
  resendEveryMs?: number;
  /** Jobs younger than this are not re-sent: their first dispatch may still be on its way (default 5 s). */
  resendGraceMs?: number;
  /** Reports of rollout jobs are gathered per rollout this long before one signal carries them (default 200 ms). */
  rolloutWindowMs?: number;
  /**
   * Per-robot limit on state messages: `perSecond` sustained, `burst` at once (default 20/s, burst 40; our daemon
   * sends about one a second). Messages over it are dropped before they are parsed or cost a database read, so
   * one flooding robot cannot hold up the lanes that carry every other robot's reports.
   */
  stateRate?: { perSecond: number; burst: number };
  /** Robots whose presence is handled at once (default 256; their reads and writes are batched, presence-batch.ts). */
  presenceConcurrency?: number;
  /** Prometheus series to keep up to date (workers/bridge/metrics.ts); none in most tests. */
  metrics?: BridgeMetrics;
}

/** What the bridge keeps of a rollout job after its first report: later reports need no database read. */
interface RolloutJobMeta {
  robotId: string;
  rolloutId: string;
}

export class OtaBridge {
  private readonly log: Logger;
  private readonly dbTimeoutMs: number;
  private readonly retryForMs: number;
  private readonly signalConcurrency: number;
  private readonly stateFilter: string;
  /** jobId → the report the workflow got last from this bridge (status|progress|error): skips identical heartbeats. */
  private readonly lastForwarded = new Map<string, string>();
  /** jobId → signals of that job in flight on any lane, and whether two of them overlapped (see forwardReport). */
  private readonly inFlight = new Map<string, { count: number; overlapped: boolean }>();
  private stopping = false;
  /** robot → its last presence as received by this bridge (retained messages refill it at every start). */
  private readonly presence = new Map<string, boolean>();
  /** robot → when its open jobs were last compared with its state map (robots without presence only). */
  private readonly lastAliveCheck = new Map<string, number>();
  /** job → when it was last sent again because its robot's state map lacked it. */
  private readonly lastResend = new Map<string, number>();
  /** Rollout jobs seen (owner and rollout): a robot's repeated heartbeats cost no database read. */
  private readonly rolloutJobs = new Map<string, RolloutJobMeta>();
  /**
   * Single jobs seen open, with their robot: their later reports (heartbeats, progress, the terminal one) need no
   * database read before they are signalled. A job whose workflow has closed is read again (re-ack, see below).
   */
  private readonly singleJobs = new Map<string, string>();
  /** Rollout job → the last status its rollout got; a repeat is skipped before any database read. */
  private readonly rolloutForwarded = new Map<string, string>();
  /** Rollout job → when its ack was last re-published for a repeated terminal report. */
  private readonly rolloutReacked = new Map<string, number>();
  private readonly rollouts: RolloutBatcher;
  /** RECEIVED / DOWNLOADING of batched single jobs, stored as inserted rows (activities/db/ota-job-progress.ts). */
  private readonly progress: JobProgressRecorder;
  private readonly jobs: JobLookup;
  private readonly presenceDb: PresenceBatch;
  private readonly running: RunningRollouts;
  /** robot → its presence messages in hand, in order (see the constructor). */
  private readonly presenceChains = new Map<string, Promise<void>>();
  private presenceInHand = 0;
  private readonly presenceWaiters: Array<() => void> = [];
  /** robot → its token bucket for state messages (see stateRate). */
  private readonly stateBuckets = new Map<string, { tokens: number; at: number; dropped: number; warnedAt: number }>();

  constructor(private readonly o: OtaBridgeOptions) {
    this.log = o.log;
    this.dbTimeoutMs = o.dbTimeoutMs ?? DEFAULT_DB_TIMEOUT_MS;
    this.retryForMs = o.retryForMs ?? 30_000;
    this.signalConcurrency = o.signalConcurrency ?? 8;
    if (o.stateLanes.length === 0) throw new Error('OtaBridge needs at least one state lane');
    this.stateFilter = sharedStateFilter(o.shareGroup);
    // A 20 ms join window: measured on the 200-deploy burst, the default 5 ms still cost 112 job reads (and 91
    // result reads) for 200 first reports; each is a collection scan on FerretDB.
    this.jobs = new JobLookup(o.models.OtaJob, this.dbTimeoutMs, 20, undefined, o.models.OtaJobArchive, o.models.OtaRolloutResult);
    this.progress = new JobProgressRecorder(o.models.OtaJobProgressRow, o.log, 100, this.dbTimeoutMs);
    this.presenceDb = new PresenceBatch({ models: o.models, dbTimeoutMs: this.dbTimeoutMs });
    this.running = new RunningRollouts(o.models.OtaRollout, this.dbTimeoutMs);
    this.rollouts = new RolloutBatcher({
      workflows: o.workflows,
      log: o.log,
      windowMs: o.rolloutWindowMs,
      onDelivered: (_rolloutId, reports) => {
        o.metrics?.rolloutSignals.inc();
        for (const r of reports) boundedSet(this.rolloutForwarded, r.jobId, r.status);
      },
      onClosed: (_rolloutId, jobIds) => {
        // Read again next time: the job is terminal in the database by now and its ack is then re-sent.
        for (const id of jobIds) {
          this.rolloutJobs.delete(id);
          this.rolloutForwarded.delete(id);
        }
      },
    });
    // Installed before the first packet: a persistent session delivers queued messages right after CONNACK.
    // Each client gets its own handler, so each is serial on its own and the clients run side by side.
    for (const client of o.stateLanes) {
      client.handleMessage = (packet: IPublishPacket, done) => {
        o.metrics?.inHand.inc({ connection: 'lane' });
        void this.handle(packet.topic, packet.payload).finally(() => {
          o.metrics?.inHand.dec({ connection: 'lane' });
          done();
        });
      };
    }
    // Presence is handled per robot, robots side by side: one robot's presence (its database writes and signals,
    // retried while Temporal is down) never holds up another's. Each robot's messages stay in order. The packet
    // is acknowledged once it is in its robot's queue: presence is retained, and the bridge subscribes again at
    // every start, so the broker hands the latest presence of every robot over again after a crash. At most
    // `presenceConcurrency` robots are in hand; beyond that the connection waits (backpressure).
    o.mqtt.handleMessage = (packet: IPublishPacket, done) => {
      const robotId = parseTopic(packet.topic)?.robotId ?? '';
      const prev = this.presenceChains.get(robotId) ?? Promise.resolve();
      const next = prev.then(() => this.handle(packet.topic, packet.payload));
      this.presenceChains.set(robotId, next);
      this.presenceInHand++;
      o.metrics?.inHand.inc({ connection: 'presence' });
      void next.finally(() => {
        this.presenceInHand--;
        o.metrics?.inHand.dec({ connection: 'presence' });
        if (this.presenceChains.get(robotId) === next) this.presenceChains.delete(robotId);
        this.presenceWaiters.shift()?.();
      });
      if (this.presenceInHand < (o.presenceConcurrency ?? 256)) done();
      else this.presenceWaiters.push(() => done());
    };
  }

  /** Rollout reports and returns waiting for their batch window (metrics). */
  rolloutPending(): number {
    return this.rollouts.pendingEntries();
  }

  /** Subscribes (QoS 1): presence on the main connection, state on every lane; call once all are connected. */
  async start(): Promise<void> {
    // A session left by a bridge without lanes still carries the plain state subscription: without this, the main
    // connection would handle every report a second time, serially.
    await this.o.mqtt.unsubscribeAsync(topics.allStates);
    const grants = await Promise.all([
      this.o.mqtt.subscribeAsync({ [topics.allPresence]: { qos: 1 } }),
      ...this.o.stateLanes.map((lane) => lane.subscribeAsync({ [this.stateFilter]: { qos: 1 } })),
    ]).then((all) => all.flat());
    const refused = grants.filter((g) => g.qos >= 0x80);
    if (refused.length > 0) throw new Error(`MQTT subscription refused: ${refused.map((g) => `${g.topic} (0x${g.qos.toString(16)})`).join(', ')}`);
    // Mosquitto 2.0.11 (Debian bookworm) restores a persistent session after a broker restart without its shared
    // subscriptions, yet answers "session present", so mqtt.js does not resubscribe and the lane would go deaf.
    // Subscribing again on every reconnect is harmless: the broker replaces an identical subscription.
    // `resubscribe: true` makes mqtt.js send it although it believes the lane is subscribed already; a fresh
    // object each time, since mqtt.js deletes that key from the map it is given.
    const again = (): ISubscriptionMap => Object.assign({ [this.stateFilter]: { qos: 1 as const } }, { resubscribe: true });
    for (const lane of this.o.stateLanes) {
      lane.on('connect', () => {
        lane.subscribeAsync(again()).catch((err: unknown) => {
          // Disconnected again: the next 'connect' tries again.
          this.log.warn({ err, clientId: lane.options.clientId }, 'state lane resubscribe failed');
        });
      });
    }
    this.log.info({ presence: topics.allPresence, state: this.stateFilter, lanes: this.o.stateLanes.length }, 'ota bridge subscribed');
  }

  /** Stops retrying; the caller then ends the MQTT client (unacked messages return with the session). */
  stop(): void {
    this.stopping = true;
  }

  /** Sends the rollout reports gathered so far (before the connections close at shutdown). */
  async flush(): Promise<void> {
    await Promise.all([this.rollouts.flushAll(), this.progress.flush()]);
  }

  /** Handles one message; never rejects (a failure is logged and the message acknowledged). */
  async handle(topic: string, payload: Buffer | string): Promise<void> {
    try {
      const parsed = parseTopic(topic);
      if (!parsed) {
        this.log.warn({ topic }, 'message on an unexpected topic dropped');
        return;
      }
      this.o.metrics?.messages.inc({ kind: parsed.operation });
      if (parsed.operation === 'state' && !this.takeStateToken(parsed.robotId)) {
        this.o.metrics?.dropped.inc({ reason: 'rate_limit' });
        return;
      }
      const text = Buffer.isBuffer(payload) ? payload.toString('utf8') : payload;
      if (parsed.operation === 'state') await this.onState(topic, parsed.robotId, text);
      else if (parsed.operation === 'presence') await this.onPresence(topic, parsed.robotId, text);
      else this.log.debug({ topic }, 'message on an unexpected topic dropped');
    } catch (err) {
      this.log.error({ err, topic }, 'message handling failed; message dropped');
    }
  }

  /** Token bucket per robot; false (and a warning at most every 10 s per robot) when it is empty. */
  private takeStateToken(robotId: string): boolean {
    const { perSecond, burst } = this.o.stateRate ?? { perSecond: 20, burst: 40 };
    const now = Date.now();
    const b = this.stateBuckets.get(robotId) ?? { tokens: burst, at: now, dropped: 0, warnedAt: 0 };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * perSecond);
    b.at = now;
    boundedSet(this.stateBuckets, robotId, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return true;
    }
    b.dropped++;
    if (now - b.warnedAt >= 10_000) {
      this.log.warn({ robotId, dropped: b.dropped, perSecond, burst }, 'state messages over the per-robot rate limit dropped');
      b.warnedAt = now;
      b.dropped = 0;
    }
    return false;
  }

  private async onState(topic: string, robotId: string, text: string): Promise<void> {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      this.o.metrics?.dropped.inc({ reason: 'malformed' });
      this.log.warn({ topic, robotId, reason: 'not JSON', bytes: text.length, sample: text.slice(0, 80) }, 'malformed state message dropped');
      return;
    }
    const parsed = stateMessageSchema.safeParse(json);
    if (!parsed.success) {
      const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
      this.o.metrics?.dropped.inc({ reason: 'malformed' });
      this.log.warn({ topic, robotId, reason: 'schema', issues }, 'malformed state message dropped');
      return;
    }
    const entries = Object.entries(parsed.data);
    if (entries.length > MAX_JOBS_PER_REPORT) {
      this.log.warn({ topic, robotId, reason: 'too many jobs', jobs: entries.length }, 'malformed state message dropped');
      return;
    }
    for (const [jobId, raw] of entries) {
      // A robot's error message is stored, signalled and shown: a long one is cut (the start says enough).
      const report = raw.error_msg && raw.error_msg.length > MAX_ERROR_MSG ? { ...raw, error_msg: `${raw.error_msg.slice(0, MAX_ERROR_MSG)}…` } : raw;
      await this.retrying(`report ${jobId}`, { topic, robotId, jobId }, () => this.forwardReport(robotId, jobId, report));
    }
    if (this.presence.get(robotId) !== true) {
      // Not retried: the robot's next state message (a second later, for a reference daemon) tries again.
      await this.stateAsPresence(robotId, new Set(entries.map(([id]) => id))).catch((err: unknown) =>
        this.log.warn({ err, robotId }, 'state-as-presence check failed'),
      );
    }
  }

  /** A robot without presence sent its state: it is online, and open jobs its map lacks are sent again. */
  private async stateAsPresence(robotId: string, reported: ReadonlySet<string>): Promise<void> {
    const now = Date.now();
    if (now - (this.lastAliveCheck.get(robotId) ?? 0) < (this.o.aliveCheckMs ?? 5000)) return;
    this.lastAliveCheck.set(robotId, now);
    // Batched with other robots' (presence-batch.ts): a fleet connecting at once costs a statement per window.
    if (!(await this.presenceDb.isOnline(robotId))) {
      await this.presenceDb.store(robotId, true);
      this.log.info({ robotId }, 'state message from a robot without presence: counted as online');
    }
    const open = await this.openJobsOf(await this.presenceDb.openJobs(robotId));
    const every = this.o.resendEveryMs ?? 15_000;
    const grace = this.o.resendGraceMs ?? 5000;
    const missing = open
      .map((j) => ({ id: String(j._id), age: now - new Date(j.timestamp).getTime() }))
      .filter((j) => !reported.has(j.id) && j.age >= grace && now - (this.lastResend.get(j.id) ?? 0) >= every)
      .map((j) => j.id);
    if (missing.length === 0) return;
    for (const id of missing) this.lastResend.set(id, now);
    const rolloutOf = new Map(open.filter((j) => j.deployment_id).map((j) => [String(j._id), j.deployment_id as string]));
    if (this.lastResend.size > MAX_REMEMBERED_REPORTS) {
      for (const [id, at] of this.lastResend) if (now - at >= every) this.lastResend.delete(id);
    }
    await forEachLimited(missing, this.signalConcurrency, async (jobId) => {
      const rolloutId = rolloutOf.get(jobId);
      if (rolloutId) {
        this.rollouts.addOnline(rolloutId, jobId);
        return;
      }
      try {
        // An "online" makes the workflow dispatch again, whether it waits for the robot or follows the job.
        await this.o.workflows.getHandle(otaWorkflowId(jobId)).signal(robotPresenceSignal, { online: true });
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
      }
    });
    this.log.info({ robotId, jobs: missing }, "open jobs missing from the robot's state map: sent again");
  }

  private async forwardReport(robotId: string, jobId: string, report: JobReport, reread = false): Promise<void> {
    // Rollout jobs already seen: decided from memory, before any database read.
    const known = this.rolloutJobs.get(jobId);
    if (known) {
      if (known.robotId !== robotId) {
        this.log.warn({ robotId, jobId, owner: known.robotId }, 'forged report dropped: the job belongs to another robot');
        return;
      }
      this.forwardRolloutReport(known, jobId, report);
      return;
    }
    // A running rollout's job, recognised by its derived id (running-rollouts.ts): no job read. A single job
    // (or a finished rollout's) goes on to the database below.
    if (!reread && !this.singleJobs.has(jobId)) {
      const rolloutId = await this.running.rolloutOf(robotId, jobId);
      if (rolloutId) {
        const meta = { robotId, rolloutId };
        boundedSet(this.rolloutJobs, jobId, meta);
        this.forwardRolloutReport(meta, jobId, report);
        return;
      }
    }
    const key = `${report.status}|${report.progress ?? ''}|${report.error_msg ?? ''}`;
    // Single jobs already seen open: the owner check and the heartbeat dedupe from memory. A repeated terminal
    // report means the daemon missed its ack: that one goes through the database (which re-sends the ack).
    const owner = reread ? undefined : this.singleJobs.get(jobId);
    if (owner !== undefined && owner !== robotId) {
      this.o.metrics?.dropped.inc({ reason: 'forged' });
      this.log.warn({ robotId, jobId, owner }, 'forged report dropped: the job belongs to another robot');
      return;
    }
    const repeat = this.lastForwarded.get(jobId) === key;
    if (owner !== undefined && repeat && !isTerminal(report.status)) return;
    if (owner === undefined || repeat) {
      const job = await this.jobs.get(jobId);
      if (!job) {
        this.o.metrics?.dropped.inc({ reason: 'unknown_job' });
        this.log.warn({ robotId, jobId }, 'report for an unknown job dropped');
        return;
      }
      if (job.robot_id !== robotId) {
        this.o.metrics?.dropped.inc({ reason: 'forged' });
        this.log.warn({ robotId, jobId, owner: job.robot_id }, 'forged report dropped: the job belongs to another robot');
        return;
      }
      if (isTerminal(job.status as JobStatus)) {
        this.singleJobs.delete(jobId);
        if (report.status === 'COMPLETED' && (job.status === 'CANCELED' || job.status === 'TIMED_OUT')) {
          await this.recordInstalledAfterEnd(robotId, jobId, job.status);
        }
        // The daemon still reports a finished job: it missed the ack. Not awaited (see republishAck).
        this.lastForwarded.delete(jobId);
        this.republishAck(robotId, jobId);
        return;
      }
      if (job.deployment_id) {
        const meta = { robotId, rolloutId: job.deployment_id };
        boundedSet(this.rolloutJobs, jobId, meta);
        this.forwardRolloutReport(meta, jobId, report);
        return;
      }
      boundedSet(this.singleJobs, jobId, robotId);
    }
    if (this.lastForwarded.get(jobId) === key) return;
    // Lanes can signal one job concurrently, and concurrent signals may reach the workflow in any order, so the
    // one that returns last is not necessarily the one the workflow got last. lastForwarded must only ever hold
    // what the workflow got last, or a heartbeat carrying the robot's latest report could be skipped: after an
    // overlap (or a failure, where delivery is unknown) it is cleared, so the next heartbeat is forwarded anyway.
    // Statuses are safe either way (the workflow only moves forward); this keeps live progress converging too.
    const flight = this.inFlight.get(jobId) ?? { count: 0, overlapped: false };
    flight.count++;
    if (flight.count > 1) flight.overlapped = true;
    this.inFlight.set(jobId, flight);
    let delivered = false;
    try {
      await this.o.workflows.getHandle(otaWorkflowId(jobId)).signal(robotReportSignal, report);
      delivered = true;
      this.o.metrics?.forwarded.inc({ path: 'job' });
    } catch (err) {
      // A closed (or not yet started) workflow is not the bridge's problem: the job's state is already decided.
      if (err instanceof WorkflowNotFoundError) {
        if (owner !== undefined) {
          // Known from memory only: read it now (a terminal job gets its ack re-sent).
          this.singleJobs.delete(jobId);
          return await this.forwardReport(robotId, jobId, report, true);
        }
        this.log.warn({ robotId, jobId, status: report.status }, 'report for a job without a running workflow dropped');
        return;
      }
      throw err;
    } finally {
      if (delivered && !flight.overlapped) this.remember(jobId, key);
      else this.lastForwarded.delete(jobId);
      if (--flight.count === 0) this.inFlight.delete(jobId);
    }
    this.log.debug({ robotId, jobId, status: report.status, progress: report.progress }, 'report forwarded');
  }

  /**
   * A rollout job's terminal report joins its rollout's next batch. A repeated terminal report means the daemon
   * has not had its ack: re-sent at most every 5 s once the rollout has the report (the rollout acks after
   * storing; this only covers a lost ack).
   */
  private forwardRolloutReport(meta: RolloutJobMeta, jobId: string, report: JobReport): void {
    // Only terminal statuses travel: each stored status costs a database write per robot, the scarce resource
    // of a fleet rollout (FerretDB updates document by document). RECEIVED / DOWNLOADING stay on the robot,
    // except for batched single deploys, whose job_state shows them as the reference's did: one inserted row per
    // (job, status), gathered into one insert per window, repeats skipped from memory.
    if (!isTerminal(report.status)) {
      if (report.status !== 'PENDING' && isSinglesBatch(meta.rolloutId)) this.progress.add(jobId, meta.rolloutId, meta.robotId, report.status);
      return;
    }
    if (this.rolloutForwarded.get(jobId) === report.status) {
      if (isTerminal(report.status)) {
        const now = Date.now();
        if (now - (this.rolloutReacked.get(jobId) ?? 0) >= 5000) {
          boundedSet(this.rolloutReacked, jobId, now);
          this.republishAck(meta.robotId, jobId);
        }
      }
      return;
    }
    this.rollouts.addReport(meta.rolloutId, { jobId, robotId: meta.robotId, status: report.status, error_msg: report.error_msg ?? null });
    this.o.metrics?.forwarded.inc({ path: 'rollout' });
  }

  /**
   * Fire-and-forget on purpose: it goes out on the main connection, whose incoming packets (this PUBACK too) wait
   * while that connection is inside a handler, e.g. a presence fan-out that may retry for retryForMs; a lane
   * must not stall on that. A lost re-ack is re-sent on the daemon's next heartbeat.
   */
  private republishAck(robotId: string, jobId: string): void {
    this.o.mqtt.publish(topics.ack(robotId), jobId, { qos: 1 }, (err) => {
      if (err) this.log.warn({ robotId, jobId, err: err.message }, 'ack re-publish failed');
    });
    this.log.info({ robotId, jobId }, 'job already terminal: ack re-published');
  }

  private async onPresence(topic: string, robotId: string, text: string): Promise<void> {
    const value = text.trim();
    if (value === '') return; // a cleared retained message
    if (value !== PRESENCE_ONLINE && value !== PRESENCE_OFFLINE) {
      this.log.warn({ topic, robotId, reason: 'not online/offline', sample: value.slice(0, 80) }, 'malformed presence message dropped');
      return;
    }
    const online = value === PRESENCE_ONLINE;
    this.presence.set(robotId, online);
    const ctx = { topic, robotId, online };
    // No deadline: a robot publishes its presence once per connection, so a presence given up on would leave its
    // waiting jobs waiting until it reconnects. Stopping ends the retries; the retained message comes back to
    // the next bridge.
    const untilStopped = Number.POSITIVE_INFINITY;
    const stored = await this.retrying('presence upsert', ctx, () => this.storePresence(robotId, online), untilStopped);
    if (stored === undefined) return;
    const jobs = await this.retrying('open jobs lookup', ctx, async () => this.openJobsOf(await this.presenceDb.openJobs(robotId)), untilStopped);
    if (!jobs) return;
    // Rollout jobs: the robot's return joins its rollout's next batch (an "offline" changes nothing there).
    for (const j of jobs) if (j.deployment_id && online) this.rollouts.addOnline(j.deployment_id, String(j._id));
    const ids = jobs.filter((j) => !j.deployment_id).map((j) => String(j._id));
    let signalled = 0;
    await forEachLimited(ids, this.signalConcurrency, async (jobId) => {
      const ok = await this.retrying('presence signal', { ...ctx, jobId }, async () => {
        try {
          await this.o.workflows.getHandle(otaWorkflowId(jobId)).signal(robotPresenceSignal, { online });
          return true;
        } catch (err) {
          if (err instanceof WorkflowNotFoundError) return false;
          throw err;
        }
      }, untilStopped);
      if (ok) signalled++;
    });
    this.log.info({ robotId, online, openJobs: ids.length, signalled }, 'presence stored and signalled');
  }

  /**
   * Stores a robot's presence, batched with other robots' (presence-batch.ts: insert-first, an upsert is a
   * collection scan on FerretDB; robots stored before are updated only where the value changes).
   */
  private async storePresence(robotId: string, online: boolean): Promise<true> {
    await this.presenceDb.store(robotId, online);
    return true; // `retrying` answers undefined when it gave up
  }

  /** `jobs` (open in their documents) without the rollout jobs that have ended (a result row). */
  private async openJobsOf<J extends Pick<OtaJob, '_id' | 'status' | 'deployment_id'>>(jobs: J[]): Promise<J[]> {
    if (!jobs.some((j) => j.deployment_id)) return jobs;
    const merged = await overlayRolloutResults(this.o.models.OtaRolloutResult, jobs, this.dbTimeoutMs);
    return merged.filter((j) => !isTerminal(j.status as JobStatus));
  }

  /**
   * The cloud ended the job (cancel, timeout) after the robot had already installed the file: the job's status
   * stays as decided, but the truth is recorded: what sits at the robot's path (deploy_state) and a note on the
   * job, so an operator does not believe the old file is still there.
   */
  private async recordInstalledAfterEnd(robotId: string, jobId: string, status: JobStatus): Promise<void> {
    const note = `${status.toLowerCase().replace('_', ' ')}, but the robot had already installed the file`;
    await this.retrying('installed-after-end record', { robotId, jobId }, async () => {
      // The job may have been archived already (api/ota/archiver.ts): the note goes on whichever copy exists.
      const set = { $set: { error_msg: note, updated_at: new Date() } };
      // A rollout job's end is its result row (activities/db/ota-rollout-results.ts): the note goes there.
      const result = await withDbTimeout('note installed after end (result)', this.dbTimeoutMs, this.o.models.OtaRolloutResult.updateOne({ _id: jobId, error_msg: { $ne: note } }, set));
      const live = result.matchedCount > 0 ? result : await withDbTimeout('note installed after end', this.dbTimeoutMs, this.o.models.OtaJob.updateOne({ _id: jobId, error_msg: { $ne: note } }, set));
      // Nothing matched live: already noted there, or archived (then the archive copy gets it, once).
      if (live.matchedCount === 0) {
        await withDbTimeout('note installed after end (archive)', this.dbTimeoutMs, this.o.models.OtaJobArchive.updateOne({ _id: jobId, error_msg: { $ne: note } }, set));
      }
      await upsertDeployTarget(this.o.models, jobId, this.dbTimeoutMs);
    });
    this.log.warn({ robotId, jobId, status }, 'robot installed the file of a job the cloud had already ended; deploy target recorded');
  }

  /** Retries `fn` on errors with backoff for `patienceMs` (default retryForMs) or until the bridge stops; undefined if it gave up. */
  private async retrying<T>(what: string, ctx: Record<string, unknown>, fn: () => Promise<T>, patienceMs = this.retryForMs): Promise<T | undefined> {
    const deadline = Date.now() + patienceMs;
    let delay = 250;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        // A refused command (activities/db/timeout.ts) fails the same way every time: no point retrying it.
        const giveUp = this.stopping || Date.now() + delay > deadline || (err instanceof ApplicationFailure && err.nonRetryable);
        this.log[giveUp ? 'error' : 'warn']({ ...ctx, err, attempt }, giveUp ? `${what} failed; given up` : `${what} failed; retrying`);
        if (giveUp) return undefined;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  private remember(jobId: string, key: string): void {
    this.lastForwarded.delete(jobId); // re-insert: Map order is insertion order, so the oldest goes first
    this.lastForwarded.set(jobId, key);
    if (this.lastForwarded.size > MAX_REMEMBERED_REPORTS) {
      const oldest = this.lastForwarded.keys().next().value;
      if (oldest !== undefined) this.lastForwarded.delete(oldest);
    }
  }
}
