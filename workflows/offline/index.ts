// Every workflow the offline worker runs on the center's namespace (the worker bundles this module).
// A plain re-export list: one line each (cloud sync: issue 10; robot sync: issue 11).
export * from './robot-sync';
export * from './cloud-sync';
