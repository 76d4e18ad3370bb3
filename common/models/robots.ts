// The cloud's one robot registry (DESIGN.md "Robot identity"): collection `robots`, keyed by robot id. A robot
// exists for OTA once provisioned (`npm run robot -- add ID --root DIR`): its MQTT user and the deploy roots the
// cloud enforces before creating a job. Other features (centers, perfect state) add their fields to this model.
// No secret lives here: the MQTT password exists only in the broker's (hashed) password file and the robot's config.
import { Schema, type Connection, type InferSchemaType, type Model } from 'mongoose';

const robotSchema = new Schema(
  {
    _id: { type: String, required: true }, // robot_id
    /** Absolute directories a deploy_path must lie in (checked by the API, and again by the daemon). */
    deploy_roots: { type: [String], default: [] },
    /** The robot's MQTT user name (= robot id; the broker's ACL is `ota/%u/#`). */
    mqtt_username: { type: String, required: true },
    created_at: { type: Date, required: true },
    updated_at: { type: Date, required: true },
  },
  { collection: 'robots', versionKey: false },
);

export type Robot = InferSchemaType<typeof robotSchema>;

export interface RobotModels {
  Robot: Model<Robot>;
}

export function registerRobotModels(conn: Connection, timeoutMs: number): RobotModels {
  robotSchema.pre(/^find|^count|^update|^delete/, function (this: { maxTimeMS?: (ms: number) => unknown }) {
    this.maxTimeMS?.(timeoutMs);
  });
  return { Robot: conn.model<Robot>('Robot', robotSchema) };
}
