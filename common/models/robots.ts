// The cloud's one robot registry (DESIGN.md "Robot identity"): a robot belongs to a center, whose cloud sync
// serves its perfect state. OTA provisioning adds its own fields to this same model.
import { Schema, type Connection, type InferSchemaType, type Model } from 'mongoose';

const robotSchema = new Schema(
  {
    _id: { type: String, required: true }, // robot id
    center_id: { type: String, required: true },
    /** Absolute directory on the robot under which its RFs live; perfect-state paths are relative to it. */
    rf_root: { type: String, required: true },
    /** What the center last reported of this robot's inventory (counts only). */
    last_inventory: {
      type: { _id: false, files: Number, bytes: Number, taken_at: Date, reported_at: Date },
      default: null,
    },
  },
  { collection: 'robots', versionKey: false, minimize: false },
);
robotSchema.index({ center_id: 1 });

export type CloudRobot = InferSchemaType<typeof robotSchema>;

export function registerRobotModel(conn: Connection, timeoutMs: number): Model<CloudRobot> {
  robotSchema.pre(/^find|^count|^update|^delete/, function (this: { maxTimeMS?: (ms: number) => unknown }) {
    this.maxTimeMS?.(timeoutMs);
  });
  return conn.model<CloudRobot>('Robot', robotSchema);
}
