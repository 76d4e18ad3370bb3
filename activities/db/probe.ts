// Stack probe, database part: an idempotent write (upsert keyed by the probe id) and a read through mongoose.
import { Schema, type Connection } from 'mongoose';
import { activityInfo } from '@temporalio/activity';

const probeSchema = new Schema(
  {
    _id: { type: String, required: true },
    robot_id: { type: String, required: true },
    created_at: { type: Date, required: true },
  },
  { collection: 'stack_probes', versionKey: false },
);

export function createDbProbeActivities(conn: Connection) {
  const Probe = conn.models.StackProbe ?? conn.model('StackProbe', probeSchema);
  return {
    async probeMongo(probeId: string, robotId: string): Promise<{ attempt: number; documents: number; robotId: string }> {
      // $setOnInsert: a retried attempt finds the document and changes nothing.
      await Probe.updateOne(
        { _id: probeId },
        { $setOnInsert: { robot_id: robotId, created_at: new Date() } },
        { upsert: true },
      ).maxTimeMS(10000);
      const doc = await Probe.findById(probeId).lean<{ robot_id: string }>().maxTimeMS(10000);
      const documents = await Probe.countDocuments({ _id: probeId }).maxTimeMS(10000);
      return { attempt: activityInfo().attempt, documents, robotId: doc?.robot_id ?? '' };
    },
  };
}
