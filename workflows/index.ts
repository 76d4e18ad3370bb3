// Every workflow the fleet worker runs (the worker bundles this module).
export * from './stack-probe';
