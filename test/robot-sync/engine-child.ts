// A process that runs the upload engine for a test and stops between the .part writes and the renames: it writes
// every part, prints "parts written" from the flush step and then waits there, so the test can SIGKILL it with
// the parts on the robot and nothing renamed yet. Usage: engine-child.ts <robot id> <items JSON file>.
import fs from 'node:fs';
import { connectRobot, sftp } from '../../activities/ssh/connect';
import { ensureRemoteDirs, uploadFiles, type UploadItem } from '../../activities/ssh/sftp-upload';
import { loadConfig } from '../../common/config';
import { robotDirectoryFromFleet } from '../../common/robot-directory';
import { readFleet } from '../../infra/fleet';

async function main(): Promise<void> {
  const [robotId, itemsFile] = process.argv.slice(2);
  const items = JSON.parse(fs.readFileSync(itemsFile, 'utf8')) as UploadItem[];
  const client = await connectRobot(robotDirectoryFromFleet(readFleet(loadConfig())).ssh(robotId));
  await ensureRemoteDirs(client, items.map((i) => i.remotePath));
  const s = await sftp(client);
  await uploadFiles(s, items, {
    flush: async () => {
      console.log('parts written');
      await new Promise(() => undefined); // killed here
    },
  });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
