// The cloud's one robot registry (DESIGN.md "Robot identity"): collection `robots`, keyed by robot id. OTA,
// rollouts, cloud sync and the UIs all read it.
// - Provisioned for OTA (`npm run robot -- add ID --root DIR`): its MQTT user and the deploy roots the cloud
//   enforces before creating a job.
// - Belonging to a center: cloud sync serves that center its perfect state, and records its inventory counts.
// No secret lives here: the MQTT password exists only in the broker's (hashed) password file and the robot's config.
import { Schema, type Connection, type InferSchemaType, type Model } from 'mongoose';
import { withQueryTimeout } from './query-timeout';

const robotSchema = new Schema(
  {
    _id: { type: String, required: true }, // robot_id
    /** Absolute directories a deploy_path must lie in (checked by the API, and again by the daemon). */
    deploy_roots: { type: [String], default: [] },
    /** The robot's MQTT user name (= robot id; the broker's ACL is `ota/%u/#`); null until provisioned for OTA. */
    mqtt_username: { type: String, default: null },
    /** The center whose offline app syncs this robot; null for a robot that is only provisioned for OTA. */
    center_id: { type: String, default: null },
    /** Absolute directory on the robot under which its RFs live; perfect-state paths are relative to it. */
    rf_root: { type: String, default: null },
    /** What the center last reported of this robot's inventory (counts only). */
    last_inventory: {
      type: { _id: false, files: Number, bytes: Number, taken_at: Date, reported_at: Date },
      default: null,
    },
    created_at: { type: Date },
    updated_at: { type: Date },
  },
  { collection: 'robots', versionKey: false, minimize: false },
);
robotSchema.index({ center_id: 1 });

export type Robot = InferSchemaType<typeof robotSchema>;

export interface RobotModels {
  Robot: Model<Robot>;
}

export function registerRobotModels(conn: Connection, timeoutMs: number): RobotModels {
  withQueryTimeout([robotSchema], timeoutMs);
  return { Robot: conn.model<Robot>('Robot', robotSchema) };
}
