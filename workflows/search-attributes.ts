// Typed search-attribute keys of the `fleet` namespace (registered as Keyword by infra/stack.ts). Clients set
// them at start (`typedSearchAttributes`), workflows upsert them; one definition keeps the names in step.
// Workflow-safe module: @temporalio/common is bundled into workflow code anyway.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const ROBOT_ID_SA = defineSearchAttributeKey('RobotId', SearchAttributeType.KEYWORD);
export const CENTER_ID_SA = defineSearchAttributeKey('CenterId', SearchAttributeType.KEYWORD);
/** The OTA job's persisted status (PENDING … COMPLETED); operators filter with `JobState = "FAILED"`. */
export const JOB_STATE_SA = defineSearchAttributeKey('JobState', SearchAttributeType.KEYWORD);
export const DEPLOYMENT_ID_SA = defineSearchAttributeKey('DeploymentId', SearchAttributeType.KEYWORD);
