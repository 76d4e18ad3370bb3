// Every workflow the fleet worker runs (the worker bundles this module). A plain re-export list: one line each.
export * from './stack-probe';
export * from './ota-deployment';
export * from './ota-rollout';
