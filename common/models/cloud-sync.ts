// The online app's cloud-sync data: centers (each with its own JWT verification key), the upstream records they
// send (sessions, children), the downstream catalogue (actions, categories, skills, static images), the RFs in
// S3 and each robot's perfect state, and the version map that says which offline app versions are compatible.
import { Schema, type Connection, type InferSchemaType, type Model } from 'mongoose';
import { withQueryTimeout } from './query-timeout';

const centerSchema = new Schema(
  {
    _id: { type: String, required: true }, // center id (the JWT's kid and sub)
    name: { type: String, required: true },
    /** Public JWK that verifies this center's JWTs (its private key never reaches the cloud's database). */
    public_jwk: { type: Schema.Types.Mixed, required: true },
    alg: { type: String, required: true },
    last_sync_at: { type: Date, default: null },
  },
  { collection: 'centers', versionKey: false, minimize: false },
);

/** Upstream: `_id` is `${center_id}|${id}` so two centers' ids never collide. */
const upstreamSchema = () =>
  new Schema(
    {
      _id: { type: String, required: true },
      center_id: { type: String, required: true },
      updated_at: { type: Date, required: true },
      data: { type: Schema.Types.Mixed, required: true },
      /** The offline app version that sent it and the migrations applied on the way in. */
      app_version: { type: String, required: true },
      migrations: { type: [String], default: [] },
    },
    { versionKey: false, minimize: false },
  );

/** Downstream catalogue record; `image` names a static image when the record has one. */
const catalogueSchema = () =>
  new Schema(
    {
      _id: { type: String, required: true },
      updated_at: { type: Date, required: true },
      image: { type: String, default: null },
      data: { type: Schema.Types.Mixed, required: true },
    },
    { versionKey: false, minimize: false },
  );

const staticImageSchema = new Schema(
  {
    _id: { type: String, required: true }, // image name, e.g. action-wave.svg
    s3_bucket: { type: String, required: true },
    s3_object_name: { type: String, required: true },
    sha256: { type: String, required: true },
    size: { type: Number, required: true },
  },
  { collection: 'static_images', versionKey: false },
);

const rfSchema = new Schema(
  {
    _id: { type: String, required: true }, // the RF's short name: its object key below rf/
    s3_bucket: { type: String, required: true },
    s3_object_name: { type: String, required: true },
    sha256: { type: String, required: true },
    size: { type: Number, required: true },
  },
  { collection: 'rfs', versionKey: false },
);

const perfectStateSchema = new Schema(
  {
    _id: { type: String, required: true }, // `${robot_id}|${path}`
    robot_id: { type: String, required: true },
    /** Relative to the robot's rf_root. */
    path: { type: String, required: true },
    /** Short form of the download URL (`rf/<name>`), expanded to a full URL in the /sync answer. */
    url: { type: String, required: true },
    sha256: { type: String, required: true },
    size: { type: Number, required: true },
  },
  { collection: 'perfect_states', versionKey: false },
);
perfectStateSchema.index({ robot_id: 1 });

const versionMapSchema = new Schema(
  {
    _id: { type: String, required: true }, // offline app version, e.g. "2.3.0"
    compatible: { type: Boolean, required: true },
    /** Sync migrations (api/cloud-sync/migrations.ts) that bring this version's upstream data to the current shape. */
    migrations: { type: [String], default: [] },
  },
  { collection: 'version_maps', versionKey: false },
);

export type Center = InferSchemaType<typeof centerSchema>;
export type UpstreamDoc = InferSchemaType<ReturnType<typeof upstreamSchema>>;
export type CatalogueDoc = InferSchemaType<ReturnType<typeof catalogueSchema>>;
export type CloudStaticImage = InferSchemaType<typeof staticImageSchema>;
export type Rf = InferSchemaType<typeof rfSchema>;
export type PerfectState = InferSchemaType<typeof perfectStateSchema>;
export type VersionMap = InferSchemaType<typeof versionMapSchema>;

export interface CloudSyncModels {
  Center: Model<Center>;
  sessions: Model<UpstreamDoc>;
  children: Model<UpstreamDoc>;
  actions: Model<CatalogueDoc>;
  categories: Model<CatalogueDoc>;
  skills: Model<CatalogueDoc>;
  StaticImage: Model<CloudStaticImage>;
  Rf: Model<Rf>;
  PerfectState: Model<PerfectState>;
  VersionMap: Model<VersionMap>;
}

export function registerCloudSyncModels(conn: Connection, timeoutMs: number): CloudSyncModels {
  const s = {
    sessions: upstreamSchema().index({ center_id: 1 }),
    children: upstreamSchema().index({ center_id: 1 }),
    actions: catalogueSchema(),
    categories: catalogueSchema(),
    skills: catalogueSchema(),
  };
  withQueryTimeout([centerSchema, staticImageSchema, rfSchema, perfectStateSchema, versionMapSchema, ...Object.values(s)], timeoutMs);
  return {
    Center: conn.model<Center>('Center', centerSchema),
    sessions: conn.model<UpstreamDoc>('Session', s.sessions, 'sessions'),
    children: conn.model<UpstreamDoc>('Child', s.children, 'children'),
    actions: conn.model<CatalogueDoc>('Action', s.actions, 'actions'),
    categories: conn.model<CatalogueDoc>('Category', s.categories, 'categories'),
    skills: conn.model<CatalogueDoc>('Skill', s.skills, 'skills'),
    StaticImage: conn.model<CloudStaticImage>('CloudStaticImage', staticImageSchema),
    Rf: conn.model<Rf>('Rf', rfSchema),
    PerfectState: conn.model<PerfectState>('PerfectState', perfectStateSchema),
    VersionMap: conn.model<VersionMap>('VersionMap', versionMapSchema),
  };
}
