// `npm run robot -- add ID --root DIR [--root DIR]... [--config FILE] [--state-dir DIR]`: provisions a robot and
//   prints, as its last line, the path of the daemon config to install on the robot (/etc/fleetsync/ota-daemon.yaml).
// `npm run robot -- list`: the registry. `npm run robot -- remove ID`: revokes the credential, disconnects the robot.
// `npm run robot -- rotate-key`: a new newest signing key (local stacks); re-add robots to hand it out.
import { loadConfig } from '../common/config';
import { connectDb } from '../common/db';
import { rotateSigningKey } from '../common/signing-keys';
import { addRobot, listRobots, ProvisioningError, removeRobot } from './robots';

const USAGE = 'usage: npm run robot -- add ID --root DIR [--root DIR]... [--config FILE] [--state-dir DIR] | list | remove ID | rotate-key';

function options(args: string[]): { positional: string[]; roots: string[]; config?: string; stateDir?: string } {
  const out: { positional: string[]; roots: string[]; config?: string; stateDir?: string } = { positional: [], roots: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new ProvisioningError(`${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === '--root') out.roots.push(value());
    else if (a === '--config') out.config = value();
    else if (a === '--state-dir') out.stateDir = value();
    else if (a.startsWith('--')) throw new ProvisioningError(`unknown option ${a}\n${USAGE}`);
    else out.positional.push(a);
  }
  return out;
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  const cfg = loadConfig();
  if (command === 'rotate-key') {
    console.log(`new signing key ${rotateSigningKey(cfg).id}: the cloud signs with it now; re-add robots so their configs list it`);
    return;
  }
  const o = options(rest);
  if (!['add', 'list', 'remove'].includes(command ?? '')) throw new ProvisioningError(USAGE);
  const db = await connectDb(cfg);
  try {
    if (command === 'list') {
      for (const r of await listRobots(db.models)) console.log(`${r.robot_id}\t${r.deploy_roots.join(':')}`);
      return;
    }
    const [id] = o.positional;
    if (!id || o.positional.length > 1) throw new ProvisioningError(USAGE);
    if (command === 'add') {
      const r = await addRobot(cfg, db.models, { id, roots: o.roots, configPath: o.config, stateDir: o.stateDir });
      console.log(`robot ${r.id} provisioned (roots ${r.roots.join(', ')}; broker ${r.brokerReloaded ? 'reloaded' : 'not running: it reads the credential when it starts'})`);
      console.log(r.configPath ?? '');
    } else {
      const { removed } = await removeRobot(cfg, db.models, id);
      console.log(removed ? `robot ${id} removed: credential revoked, connection closed` : `robot ${id} was not provisioned`);
    }
  } finally {
    await db.close();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof ProvisioningError ? e.message : e instanceof Error ? e.stack : e);
    process.exit(e instanceof ProvisioningError ? 2 : 1);
  },
);
