// Activities of the otaRollout workflow. Each works on many robots at once, so a rollout of 1,000 robots costs
// tens of Temporal operations: jobs are created in bulk, dispatched by batches (one presigned URL per batch,
// one signed message per robot), robots' reports are applied in bulk, and every call answers with the
// rollout's counts read from the jobs (the database is the truth; the workflow holds counts and cursors only).
// Database writes go in chunks of at most 50 statements (FerretDB), each bounded in time.
//
// Idempotent under retries: job ids are derived from (rollout, robot), so creating twice inserts nothing new;
// terminal statuses are inserted as result rows keyed by job id (activities/db/ota-rollout-results.ts: the first
// end stored wins, a repeat is a duplicate key); a repeated publish is deduped by the daemon (job id).
// Publishing happens before the job is marked dispatched: a crash in between re-publishes.
import { forEachLimited } from '../../common/limit';
import { activityInfo, heartbeat, log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { S3Client } from '@aws-sdk/client-s3';
import type { MqttClient } from 'mqtt';
import type { Config } from '../../common/config';
import { chunks, INSERT_CHUNK } from '../../common/db';
import type { OtaJob, OtaModels, OtaRollout as OtaRolloutDoc } from '../../common/models/ota';
import { buildJob } from '../../common/ota-job-doc';
import { isTerminal, JOB_STATUSES, topics, type JobStatus } from '../../common/protocol';
import { loadSigningKeys, newestSigningKey } from '../../common/signing-keys';
import type { SigningKey } from '../../common/signing';
import type { CountsAnswer, DispatchState, RolloutEvents, RolloutStatus, WaveCounts } from '../../workflows/ota-rollout-contract';
import { rolloutWorkflowId } from '../../workflows/ota-rollout-contract';
import { isForwardTransition } from '../../workflows/ota-status';
import { deployTargetId } from '../db/ota-jobs';
import { withDbTimeout } from '../db/timeout';
import { countModelsFor, loadRolloutRobots, rolloutCounts, rolloutJobId } from '../db/ota-rollouts';
import { isSinglesBatch } from '../db/ota-job-progress';
import { insertRolloutResults, overlayRolloutResults, rolloutResultsOf, type RolloutResultRow } from '../db/ota-rollout-results';
import { isFirstAttempt } from '../attempt';
import { publishQos1 } from './connection';
import { DEFAULT_URL_TTL_SECONDS, presignDownload, signedDeployMessage, type DispatchableJob } from './ota';

export const OTA_ROLLOUT_NOT_FOUND = 'OtaRolloutNotFound';

/** What a completed job's deploy target is built from (read with the job's status, no second read). */
type CompletedJob = Pick<OtaJob, 'robot_id' | 'deploy_path' | 's3_bucket' | 's3_object_name' | 'sha256'> & { _id: string };

/** A reported job as the apply activity reads it: enough for its result row, its deploy target and the counts. */
type ReportedJob = CompletedJob & Pick<OtaJob, 'status' | 'timestamp' | 'deployment_id' | 'wave' | 'seq' | 'dispatch_state'>;
const reportedFields = {
  _id: 1, robot_id: 1, status: 1, deployment_id: 1, timestamp: 1, deploy_path: 1, s3_bucket: 1, s3_object_name: 1, sha256: 1, wave: 1, seq: 1, dispatch_state: 1,
} as const;

/** Where each wave of a rollout ends in its robot list: wave w holds the seqs below ends[w] and not below ends[w-1]. */
export function waveEnds(sizes: readonly number[]): number[] {
  let end = 0;
  return sizes.map((size) => (end += size));
}

/** The wave of a seq (waves are few: a scan). */
const waveAt = (ends: readonly number[], seq: number): number => ends.findIndex((end) => seq < end);

/**
 * What a rollout job's document holds from its creation on, derived from the rollout (createRolloutJobs writes
 * exactly this through buildJob): the dispatch and the apply build queued or reported jobs from it instead of
 * reading them.
 */
function derivedJob(
  r: Pick<OtaRolloutDoc, '_id' | 's3_bucket' | 's3_object_name' | 'deploy_path' | 'sha256'>,
  robotId: string,
  seq: number,
  ends: readonly number[],
): CompletedJob & Pick<OtaJob, 'seq' | 'wave' | 'status'> {
  return {
    _id: rolloutJobId(r._id, robotId),
    robot_id: robotId,
    s3_bucket: r.s3_bucket,
    s3_object_name: r.s3_object_name,
    deploy_path: rolloutDeployPath(r.deploy_path, robotId),
    sha256: r.sha256,
    seq,
    wave: waveAt(ends, seq),
    status: 'PENDING',
  };
}

/** First attempt of this activity; a direct call (outside an activity) is treated as a retry: it counts. */
const firstAttempt = () => isFirstAttempt(false);

/**
 * This activity call, the same in each of its attempts (workflow run + activity id): stamped on the result rows
 * an apply inserts, so a retry knows the rows an earlier attempt of it stored (they were never counted: the
 * attempt's answer was lost) from rows stored by anyone else. Null outside an activity.
 */
function callKey(): string | null {
  try {
    const info = activityInfo();
    return info.workflowExecution ? `${info.workflowExecution.runId}/${info.activityId}` : null;
  } catch {
    return null;
  }
}

/** `prev` fits the rollout: one entry per wave, of the same size (else the activity counts). */
const fits = (prev: readonly WaveCounts[] | undefined, waveSizes: readonly number[]): prev is WaveCounts[] =>
  Boolean(prev) && prev!.length === waveSizes.length && prev!.every((w, i) => w.size === waveSizes[i]);

/**
 * `prev` (the counts before) with `moves` applied: each job leaves the bucket it was in (queued behind the cursor,
 * awaiting its robot, or in flight) and its status, and lands in `to` (a terminal status, or in flight / awaiting
 * its robot for a dispatch). Only for jobs whose move this call stored itself (a first attempt), so nothing counts twice.
 */
export function movedCounts(
  prev: readonly WaveCounts[],
  moves: ReadonlyArray<{ job: Pick<OtaJob, 'status' | 'wave' | 'seq' | 'dispatch_state'>; to: JobStatus | 'inFlight' | 'awaitingRobot' }>,
  cursorBefore: number,
): WaveCounts[] {
  const waves = prev.map((w) => ({ ...w, status: { ...w.status } }));
  for (const { job, to } of moves) {
    const w = waves[job.wave ?? -1];
    if (!w) continue;
    const bucket = job.dispatch_state === 'queued' && (job.seq ?? Infinity) > cursorBefore ? 'queued' : job.dispatch_state === 'awaiting_robot' ? 'awaitingRobot' : 'inFlight';
    w[bucket]--;
    if (to === 'inFlight' || to === 'awaitingRobot') {
      w[to]++;
      continue;
    }
    const from = job.status as JobStatus;
    w.status[from] = (w.status[from] ?? 0) - 1;
    if (w.status[from] === 0) delete w.status[from];
    w.status[to] = (w.status[to] ?? 0) + 1;
  }
  return waves;
}

/**
 * The rollout document lists every robot in job order (a rollout; a batch of single deploys lists none: its jobs
 * were inserted by the API with their own ids and paths, api/ota/deploy-batcher.ts): its jobs can be derived.
 */
const listsRobots = (r: { robot_ids?: readonly string[]; wave_sizes: readonly number[] }): r is { robot_ids: string[]; wave_sizes: number[] } =>
  (r.robot_ids?.length ?? 0) > 0 && r.robot_ids!.length === r.wave_sizes.reduce((a, b) => a + b, 0);

/** A count's database bound, in statement bounds (see countsOf). */
const COUNT_TIMEOUT_FACTOR = 6;

/**
 * Jobs of waves 0..maxWave past the cursor that have ended (an operator's cancel while they were queued), from the
 * counts: a wave's size is its queued jobs, those it handed out (seq at or below the cursor) and those.
 */
export function endedWhileQueued(counts: readonly WaveCounts[], waveSizes: readonly number[], cursor: number, maxWave: number): number {
  let start = 0;
  let ended = 0;
  waveSizes.forEach((size, w) => {
    const handedOut = Math.min(size, Math.max(0, cursor + 1 - start));
    if (w <= maxWave) ended += size - handedOut - counts[w].queued;
    start += size;
  });
  return ended;
}

/** Milliseconds since the last call (the first: since creation): where an activity's time goes, in its log line. */
function stopwatch(): () => number {
  let at = performance.now();
  return () => {
    const now = performance.now();
    const ms = Math.round(now - at);
    at = now;
    return ms;
  };
}

const NON_TERMINAL: JobStatus[] = JOB_STATUSES.filter((s) => !isTerminal(s));
/** Ids per `$in` read: one statement is one collection scan on FerretDB, however many ids it names (an apply
 * carries up to 1,000 reports: one scan, not five). */
const READ_CHUNK = 1000;
/** Ids per `$in` write: FerretDB updates document by document (about 10 ms each on a busy 2-core box), so a
 * write of more than 50 can pass the database timeout. */
const WRITE_CHUNK = 50;
/** Publishes in flight at once from one activity (QoS 1, each waits for its PUBACK; the broker answers in order). */
const PUBLISH_CONCURRENCY = 256;

export { rolloutJobId };

/** The rollout's deploy path for one robot: `{robot_id}` is replaced by the robot's id. */
export const rolloutDeployPath = (template: string, robotId: string): string => template.split('{robot_id}').join(robotId);

export interface OtaRolloutActivityDeps {
  mqtt: MqttClient;
  models: Pick<OtaModels, 'OtaJob' | 'OtaRollout' | 'RobotPresence' | 'DeployTarget' | 'OtaRolloutResult' | 'OtaRolloutRobots'>;
  s3: S3Client;
  cfg: Pick<Config, 'mongo' | 'dataDir' | 'env' | 'ota'>;
  signingKeys?: () => SigningKey[];
  urlTtlSeconds?: number;
}


export function createOtaRolloutActivities({
  mqtt,
  models,
  s3,
  cfg,
  urlTtlSeconds = DEFAULT_URL_TTL_SECONDS,
  signingKeys = () => loadSigningKeys(cfg),
}: OtaRolloutActivityDeps) {
  const { OtaJob, OtaRollout, RobotPresence, DeployTarget, OtaRolloutResult, OtaRolloutRobots } = models;
  const t = cfg.mongo.timeoutMs;

  /**
   * Robot lists of rollouts kept apart (robot_parts), by rollout: written once before the rollout document and
   * never changed, so this worker reads each at most once (a few recent rollouts kept).
   */
  const robotLists = new Map<string, Promise<string[]>>();
  const ROBOT_LISTS_KEPT = 8;
  function robotsOf(rolloutId: string, parts: number): Promise<string[]> {
    let list = robotLists.get(rolloutId);
    if (!list) {
      list = loadRolloutRobots(OtaRolloutRobots, rolloutId, parts, t);
      robotLists.set(rolloutId, list);
      list.catch(() => robotLists.delete(rolloutId));
      if (robotLists.size > ROBOT_LISTS_KEPT) robotLists.delete(robotLists.keys().next().value!);
    }
    return list;
  }

  /** Robot id → seq of a robot list, built once per list (a cached list is the same array every time). */
  const seqIndexes = new WeakMap<readonly string[], Map<string, number>>();
  function seqIndex(list: readonly string[]): Map<string, number> {
    let index = seqIndexes.get(list);
    if (!index) seqIndexes.set(list, (index = new Map(list.map((id, seq) => [id, seq]))));
    return index;
  }

  /** The rollout document; its robot list (up to MAX_ROLLOUT_ROBOTS ids) only when asked for. */
  async function loadRollout(rolloutId: string, withRobots = false) {
    const r = await withDbTimeout('load rollout', t, OtaRollout.findById(rolloutId, withRobots ? {} : { robot_ids: 0 }).lean());
    if (!r) throw ApplicationFailure.nonRetryable(`rollout ${rolloutId} does not exist`, OTA_ROLLOUT_NOT_FOUND);
    const robotIds = withRobots && r.robot_parts ? await robotsOf(rolloutId, r.robot_parts) : r.robot_ids;
    return { ...r, ...(robotIds ? { robot_ids: robotIds } : {}), dispatch_cursor: r.dispatch_cursor ?? -1 };
  }

  /**
   * The jobs of seq cursor+1… (at most `limit`, waves 0..maxWave) as their documents say while queued: ids from
   * (rollout, robot), file and path from the rollout, as createRolloutJobs built them.
   */
  function jobsAfter(
    r: Awaited<ReturnType<typeof loadRollout>>,
    cursor: number,
    maxWave: number,
    limit: number,
  ): Array<DispatchableJob & Pick<OtaJob, 'robot_id' | 'seq' | 'wave' | 'status' | 'dispatch_state'>> {
    const ends = waveEnds(r.wave_sizes);
    const stop = Math.min(r.robot_ids.length, ends[Math.min(maxWave, ends.length - 1)] ?? 0, cursor + 1 + limit);
    const jobs: ReturnType<typeof jobsAfter> = [];
    for (let seq = cursor + 1; seq < stop; seq++) {
      jobs.push({ ...derivedJob(r, r.robot_ids[seq], seq, ends), size: r.size, mode: undefined, dispatch_state: 'queued' });
    }
    return jobs;
  }

  /**
   * The rollout's jobs reported in `byJob`, as their documents say, built from the rollout document (one read of
   * it, not a scan of the jobs: 2-9 s per 1,000 reports at 10,000 robots). Ids not derived from (rollout, robot)
   * are left out. A job's document changes in its dispatch_state only: awaiting_robot ones are read, and only
   * when the counts say some are (a robot cannot report a job its batch marked so: it never got it, unless it
   * came back online and this rollout's apply sent it, which marks it dispatched).
   */
  async function reportedJobsOf(
    r: Awaited<ReturnType<typeof loadRollout>>,
    byJob: ReadonlyMap<string, { robotId: string }>,
    prev: readonly WaveCounts[],
  ): Promise<ReportedJob[]> {
    const seqOf = seqIndex(r.robot_ids);
    const ends = waveEnds(r.wave_sizes);
    const away = prev.some((w) => w.awaitingRobot > 0)
      ? new Set(
          (
            await withDbTimeout('load jobs awaiting their robot', t, OtaJob.find({ deployment_id: r._id, dispatch_state: 'awaiting_robot' }, { _id: 1 }).lean<Array<{ _id: string }>>())
          ).map((j) => j._id),
        )
      : new Set<string>();
    const jobs: ReportedJob[] = [];
    for (const [jobId, { robotId }] of byJob) {
      const seq = seqOf.get(robotId);
      if (seq === undefined || rolloutJobId(r._id, robotId) !== jobId) continue;
      jobs.push({
        ...derivedJob(r, robotId, seq, ends),
        deployment_id: r._id,
        timestamp: r.jobs_at!,
        dispatch_state: away.has(jobId) ? 'awaiting_robot' : 'dispatched',
      });
    }
    return jobs;
  }

  /** rolloutCounts for a rollout document just read (a running rollout's counts skip the archive). */
  // A count reads every job and result row of the rollout: at 10,000 robots on a loaded 2-core box that took more
  // than the 10 s bound of one statement (measured: three attempts of the final count timed out, 43 s), and a
  // retry only starts the same read again. A hung server still ends it.
  const countsOf = (r: { _id: string; status: string; wave_sizes: number[] }, cursor: number): Promise<WaveCounts[]> =>
    rolloutCounts(countModelsFor(r.status, models), r._id, r.wave_sizes, t * COUNT_TIMEOUT_FACTOR, cursor);

  const counts = async (rolloutId: string): Promise<WaveCounts[]> => {
    const r = await loadRollout(rolloutId);
    return countsOf(r, r.dispatch_cursor);
  };

  /** `jobs` without those that have ended (a result row): their documents still say PENDING. */
  async function stillOpen<J extends { _id: string }>(jobs: readonly J[]): Promise<J[]> {
    if (jobs.length === 0) return [];
    const ended = await rolloutResultsOf(OtaRolloutResult, jobs.map((j) => j._id), t);
    return jobs.filter((j) => !ended.has(j._id));
  }

  /** A result row for job `job` ending with `status` (finished_at is stamped when it is inserted). */
  const resultRow = (
    job: Pick<OtaJob, 'robot_id' | 'timestamp'> & { _id: string },
    rolloutId: string,
    status: JobStatus,
    error_msg: string | null,
    path: JobStatus[],
  ): Omit<RolloutResultRow, 'finished_at'> => ({
    _id: job._id,
    deployment_id: rolloutId,
    robot_id: job.robot_id,
    timestamp: job.timestamp,
    status,
    error_msg,
    transitions: path.map((st) => ({ status: st, error_msg: st === 'FAILED' || st === status ? error_msg : null, at: new Date() })),
  });

  /** Jobs a dispatch batch handed out: marked in their dispatch_state, or still 'queued' at or below the cursor. */
  const wasDispatched = (j: { dispatch_state?: string | null; seq?: number | null }, cursor: number) => j.dispatch_state !== 'queued' || (j.seq ?? Infinity) <= cursor;

  async function setDispatchState(ids: readonly string[], state: DispatchState, from: DispatchState[]): Promise<void> {
    for (const part of chunks(ids, WRITE_CHUNK)) {
      heartbeat();
      await withDbTimeout(
        'mark dispatch state',
        t,
        OtaJob.updateMany({ _id: { $in: part }, dispatch_state: { $in: from } }, { $set: { dispatch_state: state, updated_at: new Date() } }),
      );
    }
  }

  /** Publishes each job's signed deploy message (one presigned URL per object); returns the ids published. */
  async function publishDeploys(jobs: ReadonlyArray<DispatchableJob & { robot_id: string }>): Promise<string[]> {
    const key = newestSigningKey(signingKeys());
    const urls = new Map<string, Promise<string>>();
    const published: string[] = [];
    await forEachLimited(jobs, PUBLISH_CONCURRENCY, async (job) => {
      heartbeat();
      const object = `${job.s3_bucket}/${job.s3_object_name}`;
      if (!urls.has(object)) urls.set(object, presignDownload(s3, job, urlTtlSeconds));
      const message = signedDeployMessage(job, job.robot_id, await urls.get(object)!, key, urlTtlSeconds);
      await publishQos1(mqtt, topics.deploy(job.robot_id), message, { messageExpirySeconds: urlTtlSeconds });
      published.push(job._id);
    });
    return published;
  }

  const dispatchFields = { _id: 1, robot_id: 1, s3_bucket: 1, s3_object_name: 1, deploy_path: 1, sha256: 1, size: 1, mode: 1, seq: 1, wave: 1, status: 1, dispatch_state: 1 } as const;

  return {
    /** Creates every job of the rollout (PENDING, queued), in chunks of 50; repeating it creates nothing new. */
    async createRolloutJobs(rolloutId: string): Promise<{ jobs: number; created: number }> {
      const r = await loadRollout(rolloutId, true);
      // Every job carries the rollout's creation time (the same in a retry), recorded as jobs_at once they all
      // exist: the apply then builds a reported job from the rollout document instead of reading it.
      const now = r.timestamp;
      const ends = waveEnds(r.wave_sizes);
      const docs: OtaJob[] = r.robot_ids.map((robotId, seq) => ({
        ...buildJob(
          {
            robotId,
            deployPath: rolloutDeployPath(r.deploy_path, robotId),
            file: r,
            timeoutS: null,
            deploymentId: rolloutId,
            workflowId: rolloutWorkflowId(rolloutId),
          },
          now,
          rolloutJobId(rolloutId, robotId),
        ),
        wave: waveAt(ends, seq),
        seq,
        dispatch_state: 'queued',
      }));
      let created = 0;
      for (const part of chunks(docs)) {
        heartbeat();
        try {
          const res = await withDbTimeout('insert rollout jobs', t, OtaJob.insertMany(part, { ordered: false, rawResult: true }));
          created += res.insertedCount;
        } catch (err) {
          // Duplicate ids come from an earlier attempt of this activity: those jobs exist already.
          const e = err as { code?: number; writeErrors?: Array<{ code?: number; err?: { code?: number } }>; insertedDocs?: unknown[] };
          const allDuplicates = e.code === 11000 || (e.writeErrors ?? []).every((w) => (w.code ?? w.err?.code) === 11000);
          if (!allDuplicates) throw err;
          created += e.insertedDocs?.length ?? 0;
        }
      }
      if (listsRobots(r)) await withDbTimeout('mark rollout jobs created', t, OtaRollout.updateOne({ _id: rolloutId }, { $set: { jobs_at: now } }));
      log.info('rollout jobs created', { rolloutId, jobs: docs.length, created });
      return { jobs: docs.length, created };
    },

    /**
     * Dispatches up to `limit` queued jobs of waves 0..maxWave, in rollout order: robots online (stored presence)
     * get their deploy message; the others wait for their presence (awaiting_robot), which the bridge forwards.
     * `fresh`: the run's first dispatch of jobs the API stored just before starting it (OtaRolloutInput.storedJobs,
     * `prev` their counts): no result row can exist yet (only this run's later activities write them), and the
     * cursor is the initial one unless an earlier attempt moved it, so the rollout and its jobs are read side by
     * side and the results are not read. If fewer jobs are found than `prev` holds (one canceled before the run
     * started), the counts are read instead of moved.
     */
    async dispatchRolloutBatch(
      rolloutId: string,
      maxWave: number,
      limit: number,
      prev?: WaveCounts[],
      fresh = false,
    ): Promise<{ dispatched: number; awaitingRobot: number; counts: WaveCounts[]; moved: boolean }> {
      if (limit <= 0) return { dispatched: 0, awaitingRobot: 0, counts: await counts(rolloutId), moved: false };
      const lap = stopwatch();
      const first = firstAttempt();
      const queuedAfter = (c: number) =>
        withDbTimeout(
          'load queued jobs',
          t,
          OtaJob.find({ deployment_id: rolloutId, dispatch_state: 'queued', status: 'PENDING', seq: { $gt: c }, wave: { $lte: maxWave } }, dispatchFields)
            .sort({ seq: 1 })
            .limit(limit)
            .lean(),
        );
      let rollout: Awaited<ReturnType<typeof loadRollout>>;
      let jobs: ReturnType<typeof jobsAfter>;
      if (fresh) {
        // A batch of single deploys whose jobs the API just stored: its document and its jobs side by side.
        [rollout, jobs] = await Promise.all([loadRollout(rolloutId), queuedAfter(-1)]);
        // An earlier attempt of this dispatch moved the cursor: what is still queued behind it.
        if (rollout.dispatch_cursor !== -1) jobs = await queuedAfter(rollout.dispatch_cursor);
      } else {
        rollout = await loadRollout(rolloutId, first);
        // A first attempt derives the batch from the rollout document: the jobs past the cursor are all queued (an
        // earlier batch marks its offline robots' jobs before it moves the cursor past them) and PENDING in their
        // documents (ends are result rows). Measured at 10,000 robots: the query, one scan of the jobs collection,
        // took 2.5-11 s of a 5-8 s batch. A retry queries: its earlier attempt may have marked some.
        jobs = first && listsRobots(rollout) ? jobsAfter(rollout, rollout.dispatch_cursor, maxWave, limit) : await queuedAfter(rollout.dispatch_cursor);
      }
      const cursor = rollout.dispatch_cursor;
      const expected = prev ? prev.reduce((n, w) => n + w.queued, 0) : 0;
      const trustFresh = fresh && cursor === -1 && jobs.length === Math.min(expected, limit);
      // Jobs ended while queued (an operator's cancel of single jobs) are left out. The counts tell whether any job
      // past the cursor has ended (for a fresh batch: whether every job the API stored is still queued); only then
      // are the result rows read (a scan of them all on FerretDB).
      const noneEnded = fresh ? trustFresh : first && fits(prev, rollout.wave_sizes) && endedWhileQueued(prev, rollout.wave_sizes, cursor, maxWave) === 0;
      // The robots' presence is read alongside (one round trip instead of two on a busy database).
      const rolloutMs = lap();
      let presenceMs = 0;
      const presence = async (): Promise<Set<string>> => {
        const started = performance.now();
        const online = new Set<string>();
        for (const part of chunks([...new Set(jobs.map((j) => j.robot_id))], READ_CHUNK)) {
          const rows = await withDbTimeout('load presence', t, RobotPresence.find({ _id: { $in: part }, online: true }, { _id: 1 }).lean());
          for (const row of rows) online.add(String(row._id));
        }
        presenceMs = Math.round(performance.now() - started);
        return online;
      };
      const [open, online] = await Promise.all([noneEnded ? jobs : stillOpen(jobs), presence()]);
      const ready = open.filter((j) => online.has(j.robot_id));
      const away = open.filter((j) => !online.has(j.robot_id)).map((j) => j._id);
      const loadMs = lap();
      log.info('rollout batch publishing', { rolloutId, jobs: ready.length, awaitingRobot: away.length });
      const published = await publishDeploys(ready);
      const publishMs = lap();
      // Offline robots' jobs are marked one by one (few); the published ones are covered by the cursor, written
      // once all of them are out (a crash before it publishes them again: the daemon dedupes by job id).
      await setDispatchState(away, 'awaiting_robot', ['queued']);
      const last = jobs.reduce((m, j) => Math.max(m, j.seq ?? -1), cursor);
      if (last > cursor) {
        await withDbTimeout('advance dispatch cursor', t, OtaRollout.updateOne({ _id: rolloutId, dispatch_cursor: { $lt: last } }, { $set: { dispatch_cursor: last } }));
      }
      const markMs = lap();
      // The counts the workflow holds, moved by this batch (first attempt only: see movedCounts); else counted.
      const publishedIds = new Set(published);
      const awayIds = new Set(away);
      const moved = fits(prev, rollout.wave_sizes) && first && (!fresh || trustFresh);
      const after = moved
          ? movedCounts(
              prev,
              open.filter((j) => publishedIds.has(j._id) || awayIds.has(j._id)).map((j) => ({ job: j, to: publishedIds.has(j._id) ? ('inFlight' as const) : ('awaitingRobot' as const) })),
              cursor,
            )
          : await countsOf(rollout, Math.max(last, cursor));
      log.info('rollout batch dispatched', { rolloutId, dispatched: published.length, awaitingRobot: away.length, rolloutMs, presenceMs, loadMs, publishMs, markMs, countsMs: lap() });
      return { dispatched: published.length, awaitingRobot: away.length, counts: after, moved };
    },

    /**
     * Applies what the bridge gathered: terminal statuses inserted in bulk as result rows (a job that has one
     * already keeps it), acks for jobs now terminal, deploy targets for completed ones; and, when `mayDispatch`, the
     * jobs whose robot came back online (admitted ones only) are sent again. `prev`: the counts the workflow held
     * when it scheduled this call; they are answered moved by what this call stored (a scan of the rollout's jobs
     * and of its results on FerretDB saved per call), also on a retry: the result rows an earlier attempt of this
     * call stored are recognised by their `stored_by` and counted once. A retry that sent jobs to returning robots
     * counts afresh (what its earlier attempt marked is not told apart).
     */
    async applyRolloutEvents(rolloutId: string, events: RolloutEvents, mayDispatch: boolean, prev?: WaveCounts[]): Promise<CountsAnswer> {
      const lap = stopwatch();
      const byJob = new Map<string, { robotId: string; statuses: JobStatus[]; error_msg: string | null }>();
      for (const r of events.reports) {
        const e = byJob.get(r.jobId) ?? { robotId: r.robotId, statuses: [], error_msg: null };
        if (e.robotId !== r.robotId) continue; // the bridge checked ownership already; never trust a mix
        e.statuses.push(r.status);
        if (r.status === 'FAILED') e.error_msg = r.error_msg ?? 'robot reported FAILED without an error message';
        byJob.set(r.jobId, e);
      }
      const ids = [...byJob.keys()];
      const me = callKey();
      const readJobs = async (): Promise<ReportedJob[]> => {
        const out: ReportedJob[] = [];
        for (const part of chunks(ids, READ_CHUNK)) {
          out.push(...(await withDbTimeout('load reported jobs', t, OtaJob.find({ _id: { $in: part }, deployment_id: rolloutId }, reportedFields).lean<ReportedJob[]>())));
        }
        return out;
      };
      // A batch of single deploys lists no robots to derive its jobs from: its document and its reported jobs are
      // read side by side (one round trip). A rollout's reported jobs are derived from its document when they can be.
      const singles = isSinglesBatch(rolloutId);
      const [rollout, queried] = await Promise.all([loadRollout(rolloutId, !singles), singles ? readJobs() : null]);
      const cursor = rollout.dispatch_cursor;
      // Terminal statuses are inserted as result rows (activities/db/ota-rollout-results.ts), 50 per statement:
      // an update per job cost ~30 ms each on FerretDB. Non-terminal reports are not stored for rollout jobs.
      // Insert-first: a job that has its row already is a duplicate key (no read of the results beforehand).
      const ends = new Map<string, { job: ReportedJob; at: JobStatus; row: Omit<RolloutResultRow, 'finished_at'> }>();
      const derived = !queried && fits(prev, rollout.wave_sizes) && rollout.jobs_at && listsRobots(rollout) ? await reportedJobsOf(rollout, byJob, prev) : null;
      for (const job of queried ?? derived ?? (await readJobs())) {
        const e = byJob.get(job._id)!;
        if (job.robot_id !== e.robotId) continue;
        // The forward path from the document's status through the reported ones (duplicates and stale ones drop out).
        let at = job.status as JobStatus;
        const path: JobStatus[] = [];
        for (const st of e.statuses) {
          if (isForwardTransition(at, st)) {
            path.push(st);
            at = st;
          }
        }
        if (path.length === 0 || !isTerminal(at)) continue;
        ends.set(job._id, { job, at, row: { ...resultRow(job, rolloutId, at, at === 'FAILED' ? e.error_msg : null, path), ...(me ? { stored_by: me } : {}) } });
      }
      const readMs = lap();
      const duplicates = await insertRolloutResults(OtaRolloutResult, [...ends.values()].map((x) => x.row), t, heartbeat);
      // Jobs that had ended before (a late second report, an operator's cancel): their stored end stands. Rows an
      // earlier attempt of this very call stored are this call's own: counted, targets and acks done again.
      const found = duplicates.size > 0 ? await rolloutResultsOf(OtaRolloutResult, [...duplicates], t) : new Map<string, RolloutResultRow>();
      const mine = (id: string) => me !== null && found.get(id)?.stored_by === me;
      const earlier = new Map([...found].filter(([id]) => !mine(id)));
      const stored = [...ends.values()].filter((x) => !duplicates.has(x.job._id) || mine(x.job._id));
      const storedBefore = stored.length - [...ends.values()].filter((x) => !duplicates.has(x.job._id)).length;
      const writeMs = lap();
      const completed = stored.filter((x) => x.at === 'COMPLETED').map((x) => x.job);
      if (completed.length > 0) await upsertDeployTargets(completed);
      // COMPLETED reported for a job the cloud had already ended (an operator's cancel of that job): its status
      // stays, but what sits at the robot's path is recorded, and a note on the job says so.
      const installedAfterEnd = [...earlier.values()]
        .filter((r) => (r.status === 'CANCELED' || r.status === 'TIMED_OUT') && byJob.get(r._id)?.statuses.includes('COMPLETED'))
        .map((r) => ({ ...ends.get(r._id)!.job, status: r.status }));
      if (installedAfterEnd.length > 0) await noteInstalledAfterEnd(installedAfterEnd);
      const targetsMs = lap();
      // Acks only after the terminal status is stored (a job that was already terminal gets its ack again).
      const acks = [...ends.values()].map((x) => ({ robotId: x.job.robot_id, jobId: x.job._id }));
      await forEachLimited(acks, PUBLISH_CONCURRENCY, ({ robotId, jobId }) => publishQos1(mqtt, topics.ack(robotId), jobId));
      const acksMs = lap();

      const moves: Array<{ job: Pick<OtaJob, 'status' | 'wave' | 'seq' | 'dispatch_state'>; to: JobStatus | 'inFlight' }> = stored.map(({ job, at }) => ({ job, to: at }));
      let returned = false;
      if (mayDispatch && events.online.length > 0) {
        const open = await stillOpen(
          await withDbTimeout(
            'load jobs of robots back online',
            t,
            OtaJob.find({ _id: { $in: events.online }, deployment_id: rolloutId, status: { $in: NON_TERMINAL } }, dispatchFields).lean(),
          ),
        );
        // Admitted ones only: a job still queued behind the cursor waits for its batch.
        const published = await publishDeploys(open.filter((j) => wasDispatched(j, cursor)));
        await setDispatchState(published, 'dispatched', ['awaiting_robot']);
        // Only this call moves jobs out of awaiting_robot (one apply at a time): those read so are now in flight.
        for (const j of open) if (j.dispatch_state === 'awaiting_robot' && published.includes(j._id)) moves.push({ job: j, to: 'inFlight' });
        returned = published.length > 0;
        if (published.length > 0) log.info('rollout jobs sent again to robots back online', { rolloutId, jobs: published.length });
      }
      // A reported job was handed out (a robot cannot report a job it never got), even if the batch that published
      // it has not returned yet (it runs alongside): it leaves awaiting_robot or in flight, never the queue.
      const moved = fits(prev, rollout.wave_sizes) && (firstAttempt() || (me !== null && !returned));
      const after = moved ? movedCounts(prev!, moves, Infinity) : await countsOf(rollout, cursor);
      log.info('rollout events applied', {
        rolloutId, reports: events.reports.length, online: events.online.length, stored: stored.length, storedBefore, earlier: earlier.size, moved, readMs, writeMs, targetsMs, acksMs, restMs: lap(),
      });
      return { counts: after, moved };
    },

    /**
     * Ends the rollout's unfinished jobs (all, or `jobIds`) with `status` (CANCELED or TIMED_OUT): stored first,
     * so a late COMPLETED report cannot overwrite it, then robots that may hold the job are told to cancel it.
     */
    async endRolloutJobs(rolloutId: string, status: 'CANCELED' | 'TIMED_OUT', reason: string, jobIds: string[] | null): Promise<WaveCounts[]> {
      const filter = { deployment_id: rolloutId, status: { $in: NON_TERMINAL }, ...(jobIds ? { _id: { $in: jobIds } } : {}) };
      const { dispatch_cursor: cursor } = await loadRollout(rolloutId);
      const open = await stillOpen(
        await withDbTimeout('load unfinished rollout jobs', t, OtaJob.find(filter, { _id: 1, robot_id: 1, timestamp: 1, dispatch_state: 1, seq: 1 }).lean()),
      );
      // Queued jobs never reached a robot: nothing to tell. The others may sit at the broker or on the robot.
      const told = open.filter((j) => wasDispatched(j, cursor));
      // Stored (inserted) before the robots are told: a late COMPLETED report then finds the job ended.
      await insertRolloutResults(OtaRolloutResult, open.map((j) => resultRow(j, rolloutId, status, reason, [status])), t, heartbeat);
      await forEachLimited(told, PUBLISH_CONCURRENCY, (j) => publishQos1(mqtt, topics.cancel(j.robot_id), j._id));
      log.info('rollout jobs ended', { rolloutId, status, jobs: open.length, toldRobots: told.length });
      return counts(rolloutId);
    },

    /**
     * Liveness: sends every job in flight again (robots online, no terminal report yet) with a fresh presigned URL.
     * A daemon that has the job keeps it and takes the new URL; one whose message was lost starts it.
     */
    async resendInFlight(rolloutId: string): Promise<WaveCounts[]> {
      const rollout = await loadRollout(rolloutId);
      const cursor = rollout.dispatch_cursor;
      const open = await stillOpen(
        await withDbTimeout(
          'load jobs in flight',
          t,
          OtaJob.find({ deployment_id: rolloutId, status: { $in: NON_TERMINAL }, dispatch_state: { $ne: 'awaiting_robot' } }, dispatchFields).lean(),
        ),
      );
      const published = await publishDeploys(open.filter((j) => wasDispatched(j, cursor)));
      log.info('rollout jobs in flight sent again (no report in time)', { rolloutId, jobs: published.length });
      return countsOf(rollout, cursor);
    },

    /** Stores where the rollout stands (status, pause, current wave, reason) on its document. */
    async setRolloutState(rolloutId: string, state: { status: RolloutStatus; paused: boolean; currentWave: number; reason: string | null }): Promise<void> {
      const now = new Date();
      const finished = state.status !== 'RUNNING' && state.status !== 'PAUSED';
      await withDbTimeout(
        'store rollout state',
        t,
        OtaRollout.updateOne(
          { _id: rolloutId },
          { $set: { status: state.status, paused: state.paused, current_wave: state.currentWave, reason: state.reason, updated_at: now, ...(finished ? { finished_at: now } : {}) } },
        ),
      );
      log.info('rollout state stored', { rolloutId, ...state });
    },
  };

  /** A note on each job's result row (the rare case: one update each), and its deploy target recorded. */
  async function noteInstalledAfterEnd(jobs: ReadonlyArray<CompletedJob & { status: string }>): Promise<void> {
    for (const job of jobs) {
      const note = `${job.status.toLowerCase().replace('_', ' ')}, but the robot had already installed the file`;
      await withDbTimeout('note installed after end', t, OtaRolloutResult.updateOne({ _id: job._id, error_msg: { $ne: note } }, { $set: { error_msg: note } }));
    }
    await upsertDeployTargets(jobs);
    log.warn('robots installed the file of a rollout job the cloud had already ended; deploy targets recorded', { jobs: jobs.map((j) => j._id) });
  }

  /**
   * Records what now sits at each completed job's path (deploy_state). Most paths are new: inserted in bulk
   * (no scan); the ones that exist already (a path deployed before) are updated one statement each.
   */
  async function upsertDeployTargets(completed: readonly CompletedJob[]): Promise<void> {
    for (const jobs of chunks(completed, READ_CHUNK)) {
      const now = new Date();
      const docs = jobs.map((job) => ({
        _id: deployTargetId(job.robot_id, job.deploy_path),
        robot_id: job.robot_id,
        deploy_path: job.deploy_path,
        s3_bucket: job.s3_bucket,
        s3_object_name: job.s3_object_name,
        sha256: job.sha256,
        job_id: job._id,
        version: 'v1',
        updated_at: now,
      }));
      // Inserts go INSERT_CHUNK per statement (FerretDB's hang is on updates of existing documents); updates stay at 50.
      for (const batch of chunks(docs, INSERT_CHUNK)) {
        const existing = new Set<string>();
        try {
          await withDbTimeout('insert deploy targets', t, DeployTarget.insertMany(batch, { ordered: false }));
        } catch (err) {
          const e = err as { code?: number; writeErrors?: Array<{ code?: number; err?: { code?: number; op?: { _id?: string } }; index?: number }> };
          const errors = e.writeErrors ?? [];
          if (errors.length === 0 || !errors.every((w) => (w.code ?? w.err?.code) === 11000)) throw err;
          for (const w of errors) {
            const i = w.index ?? (w as { err?: { index?: number } }).err?.index;
            if (typeof i === 'number') existing.add(batch[i]._id);
          }
        }
        for (const updates of chunks(batch.filter((d) => existing.has(d._id)), WRITE_CHUNK)) {
          await withDbTimeout(
            'update deploy targets',
            t,
            DeployTarget.bulkWrite(
              updates.map(({ _id, version: _v, ...fields }) => ({ updateOne: { filter: { _id }, update: { $set: fields }, upsert: true } })),
              { ordered: false },
            ),
          );
        }
      }
    }
  }
}

export type OtaRolloutActivities = ReturnType<typeof createOtaRolloutActivities>;
