// OTA data: files stored in S3, deployment jobs, what the cloud believes sits at a path on a robot, and robot
// presence. Field names follow the reference service's JSON (snake_case) so API responses map one to one.
import { Schema, type Connection, type Model, type InferSchemaType } from 'mongoose';
import { JOB_STATUSES } from '../protocol';
import { withQueryTimeout } from './query-timeout';

const otaFileSchema = new Schema(
  {
    s3_bucket: { type: String, required: true },
    s3_object_name: { type: String, required: true },
    file_name: { type: String, required: true },
    timestamp: { type: Date, required: true },
    robot_id: { type: String, default: '' },
    robot_type: { type: String, default: '' },
    robot_version: { type: String, default: '' },
    deploy_path: { type: String, default: '' },
    sha256: { type: String, required: true },
    size: { type: Number, required: true },
    file_metadata: { type: Schema.Types.Mixed, default: {} },
    valid: { type: Boolean, default: true },
    version: { type: String, default: 'v1' },
  },
  { collection: 'ota_files', versionKey: false, minimize: false },
);
otaFileSchema.index({ s3_bucket: 1, s3_object_name: 1 }, { unique: true });
otaFileSchema.index({ timestamp: -1 });

const otaJobSchema = new Schema(
  {
    _id: { type: String, required: true }, // = job_id (uuid4)
    robot_id: { type: String, required: true },
    deploy_path: { type: String, required: true },
    s3_bucket: { type: String, required: true },
    s3_object_name: { type: String, required: true },
    file_name: { type: String, default: '' },
    sha256: { type: String, required: true },
    size: { type: Number, required: true },
    mode: { type: Number, required: false },
    status: { type: String, enum: JOB_STATUSES, required: true },
    error_msg: { type: String, default: null },
    /** The reference's four-field deploy payload, kept verbatim for compatibility (`deploy_msg`). */
    deploy_msg: { type: String, required: true },
    timestamp: { type: Date, required: true }, // creation
    updated_at: { type: Date, required: true },
    finished_at: { type: Date, default: null },
    workflow_id: { type: String, required: true },
    timeout_s: { type: Number, default: null },
    deployment_id: { type: String, default: null },
    /** Rollout jobs only: the wave, the position in the rollout, and where dispatch stands (ota-rollout-contract.ts). */
    wave: { type: Number, required: false },
    seq: { type: Number, required: false },
    dispatch_state: { type: String, enum: ['queued', 'awaiting_robot', 'dispatched'], required: false },
    /** Every status change after PENDING, in order (the job's `timestamp` is its PENDING time). */
    transitions: {
      type: [{ _id: false, status: { type: String, enum: JOB_STATUSES, required: true }, error_msg: { type: String, default: null }, at: { type: Date, required: true } }],
      default: undefined, // absent until the first change ($push creates it)
    },
  },
  { collection: 'ota_jobs', versionKey: false },
);
otaJobSchema.index({ robot_id: 1, timestamp: -1 });
otaJobSchema.index({ status: 1, timestamp: -1 });
otaJobSchema.index({ deployment_id: 1, wave: 1, seq: 1 });

/**
 * Finished jobs, moved out of `ota_jobs` by the API's archiver (api/ota/archiver.ts) once they have been terminal
 * for a while: FerretDB scans the whole collection on every filter, so the live collection is kept to the jobs
 * that still move. Same documents, same shape; every reader of a job by id or by list looks here too.
 */
const otaJobArchiveSchema = otaJobSchema.clone();
otaJobArchiveSchema.set('collection', 'ota_jobs_archive');

/**
 * A rollout (POST /rollouts): one file to many robots, driven by one otaRollout workflow. The robots and their
 * waves are fixed at creation; per-robot state lives in the rollout's jobs (deployment_id = rollout id).
 */
const otaRolloutSchema = new Schema(
  {
    _id: { type: String, required: true }, // rollout id (uuid4)
    s3_bucket: { type: String, required: true },
    s3_object_name: { type: String, required: true },
    file_name: { type: String, default: '' },
    sha256: { type: String, required: true },
    size: { type: Number, required: true },
    /** May hold `{robot_id}`, replaced per robot. */
    deploy_path: { type: String, required: true },
    /**
     * In dispatch order; wave_sizes splits it into waves. Empty when robot_parts is set (rollouts created since):
     * the ids are then kept in ota_rollout_robots, ROLLOUT_ROBOTS_PART per document.
     */
    robot_ids: { type: [String], required: true },
    /**
     * How many ota_rollout_robots documents hold this rollout's robot ids (null: they are in robot_ids). FerretDB
     * decodes a whole document on every read, whatever the projection: a 10,000-id list made each read of the
     * rollout (its status poll, the bridge's list of running rollouts, every activity) cost 55-160 ms.
     */
    robot_parts: { type: Number, default: null },
    wave_sizes: { type: [Number], required: true },
    options: { type: Schema.Types.Mixed, required: true },
    status: { type: String, required: true },
    paused: { type: Boolean, default: false },
    current_wave: { type: Number, default: 0 },
    /**
     * Rollout jobs with seq ≤ this were handed out by a dispatch batch. The online robots' jobs among them keep
     * dispatch_state 'queued' and count as dispatched: a per-job write per robot at dispatch was half of a
     * rollout's database time (FerretDB updates document by document). Offline ones are marked awaiting_robot.
     */
    dispatch_cursor: { type: Number, default: -1 },
    /** Every job of the rollout exists, created with this timestamp (activities/mqtt/ota-rollout.ts). */
    jobs_at: { type: Date, default: null },
    reason: { type: String, default: null },
    created_by: { type: String, default: null },
    timestamp: { type: Date, required: true },
    updated_at: { type: Date, required: true },
    finished_at: { type: Date, default: null },
    workflow_id: { type: String, required: true },
  },
  { collection: 'ota_rollouts', versionKey: false, minimize: false },
);
otaRolloutSchema.index({ timestamp: -1 });

const deployTargetSchema = new Schema(
  {
    _id: { type: String, required: true }, // `${robot_id}:${deploy_path}`
    robot_id: { type: String, required: true },
    deploy_path: { type: String, required: true },
    s3_bucket: { type: String, required: true },
    s3_object_name: { type: String, required: true },
    sha256: { type: String, default: '' },
    job_id: { type: String, default: '' },
    version: { type: String, default: 'v1' },
    updated_at: { type: Date, required: true },
  },
  { collection: 'ota_deploy_targets', versionKey: false },
);
deployTargetSchema.index({ robot_id: 1 });

/**
 * A rollout job's terminal status, written by INSERT (activities/db/ota-rollout-results.ts): FerretDB updates
 * document by document (~30 ms each on the SQLite handler), so storing 1,000 terminal states as job updates took
 * most of a rollout's time, while an insert of 50 rows costs about one statement. `_id` = job id: the first
 * terminal status stored wins (a duplicate key means "already recorded"), which is the status order's guard.
 * Readers overlay these rows on the job documents (live `status` stays PENDING) until the archiver folds them
 * into the archived job and deletes them (api/ota/archiver.ts).
 */
const otaRolloutResultSchema = new Schema(
  {
    _id: { type: String, required: true }, // = job_id
    deployment_id: { type: String, required: true },
    robot_id: { type: String, required: true },
    /** The job's creation time: /jobs pages and sorts by it. */
    timestamp: { type: Date, required: true },
    status: { type: String, enum: JOB_STATUSES, required: true },
    error_msg: { type: String, default: null },
    finished_at: { type: Date, required: true },
    transitions: {
      type: [{ _id: false, status: { type: String, enum: JOB_STATUSES, required: true }, error_msg: { type: String, default: null }, at: { type: Date, required: true } }],
      default: undefined,
    },
    /** The rollout apply call that inserted the row (activities/mqtt/ota-rollout.ts): its retry counts it once. */
    stored_by: { type: String, default: undefined },
  },
  { collection: 'ota_rollout_results', versionKey: false },
);
otaRolloutResultSchema.index({ deployment_id: 1 });

/**
 * The intermediate statuses (RECEIVED, DOWNLOADING) a robot reported for a batched single deploy (a job of a
 * `singles-…` batch, api/ota/deploy-batcher.ts), stored by INSERT (activities/db/ota-job-progress.ts): `_id` =
 * `<job_id>:<status>`, so a repeated report is a duplicate key, and no report costs an update scan of the job.
 * job_state and /jobs overlay them on the job (the furthest status wins; a terminal result row wins over all).
 */
const otaJobProgressRowSchema = new Schema(
  {
    _id: { type: String, required: true }, // `${job_id}:${status}`
    job_id: { type: String, required: true },
    deployment_id: { type: String, required: true },
    robot_id: { type: String, required: true },
    status: { type: String, enum: JOB_STATUSES, required: true },
    at: { type: Date, required: true },
  },
  { collection: 'ota_job_progress', versionKey: false },
);

/**
 * A rollout's robot ids in dispatch order, `part` × ROLLOUT_ROBOTS_PART onwards (activities/db/ota-rollouts.ts):
 * `_id` = `${rollout_id}:${part}`, each read by its id alone (the one filter FerretDB answers without a scan).
 * Written once before the rollout document, never changed.
 */
const otaRolloutRobotsSchema = new Schema(
  {
    _id: { type: String, required: true },
    rollout_id: { type: String, required: true },
    part: { type: Number, required: true },
    robot_ids: { type: [String], required: true },
  },
  { collection: 'ota_rollout_robots', versionKey: false },
);

const robotPresenceSchema = new Schema(
  {
    _id: { type: String, required: true }, // robot_id
    online: { type: Boolean, required: true },
    changed_at: { type: Date, required: true },
  },
  { collection: 'robot_presence', versionKey: false },
);

export type OtaFile = InferSchemaType<typeof otaFileSchema>;
export type OtaJob = InferSchemaType<typeof otaJobSchema>;
export type OtaRollout = InferSchemaType<typeof otaRolloutSchema>;
export type DeployTarget = InferSchemaType<typeof deployTargetSchema>;
export type RobotPresence = InferSchemaType<typeof robotPresenceSchema>;
export type OtaRolloutResult = InferSchemaType<typeof otaRolloutResultSchema>;
export type OtaJobProgressRow = InferSchemaType<typeof otaJobProgressRowSchema>;
export type OtaRolloutRobots = InferSchemaType<typeof otaRolloutRobotsSchema>;

export interface OtaModels {
  OtaFile: Model<OtaFile>;
  OtaJob: Model<OtaJob>;
  /** Terminal jobs moved out of OtaJob (see otaJobArchiveSchema). */
  OtaJobArchive: Model<OtaJob>;
  OtaRollout: Model<OtaRollout>;
  DeployTarget: Model<DeployTarget>;
  RobotPresence: Model<RobotPresence>;
  /** Terminal statuses of rollout jobs, inserted (see otaRolloutResultSchema). */
  OtaRolloutResult: Model<OtaRolloutResult>;
  /** Intermediate statuses of batched single jobs, inserted (see otaJobProgressRowSchema). */
  OtaJobProgressRow: Model<OtaJobProgressRow>;
  /** A rollout's robot ids, in parts (see otaRolloutRobotsSchema). */
  OtaRolloutRobots: Model<OtaRolloutRobots>;
}

export function registerOtaModels(conn: Connection, timeoutMs: number): OtaModels {
  withQueryTimeout([otaFileSchema, otaJobSchema, otaJobArchiveSchema, otaRolloutSchema, deployTargetSchema, robotPresenceSchema, otaRolloutResultSchema, otaJobProgressRowSchema, otaRolloutRobotsSchema], timeoutMs);
  return {
    OtaFile: conn.model<OtaFile>('OtaFile', otaFileSchema),
    OtaJob: conn.model<OtaJob>('OtaJob', otaJobSchema),
    OtaJobArchive: conn.model<OtaJob>('OtaJobArchive', otaJobArchiveSchema),
    OtaRollout: conn.model<OtaRollout>('OtaRollout', otaRolloutSchema),
    DeployTarget: conn.model<DeployTarget>('DeployTarget', deployTargetSchema),
    RobotPresence: conn.model<RobotPresence>('RobotPresence', robotPresenceSchema),
    OtaRolloutResult: conn.model<OtaRolloutResult>('OtaRolloutResult', otaRolloutResultSchema),
    OtaJobProgressRow: conn.model<OtaJobProgressRow>('OtaJobProgressRow', otaJobProgressRowSchema),
    OtaRolloutRobots: conn.model<OtaRolloutRobots>('OtaRolloutRobots', otaRolloutRobotsSchema),
  };
}
