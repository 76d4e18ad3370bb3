// A simulated robot that takes SSH *passwords* (as the seed's installs do), for the test that the password never
// reaches a workflow history or a log. A real OpenSSH sshd with PasswordAuthentication, logging in a dedicated
// Linux user whose password is random per run (sshd checks it against /etc/shadow: this needs root, as the rest
// of the simulated fleet does).
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fingerprintOfPublicKey } from '../../infra/fleet';
import { tcpOpen } from '../../infra/proc';
import { cfg, runProcess, type ChildHandle } from '../helpers';

// One user per data directory: stacks of several checkouts on one machine each set their own random password.
export const PASSWORD_ROBOT_USER = `fleetsync-robot-${crypto.createHash('sha256').update(cfg.dataDir).digest('hex').slice(0, 8)}`;

export interface PasswordRobot {
  host: string;
  port: number;
  username: string;
  password: string;
  hostKeySha256: string;
  /** Writable by the robot's user: the RF root goes below it. */
  root: string;
  sshd: ChildHandle;
}

export async function startPasswordRobot(port: number): Promise<PasswordRobot> {
  const dir = path.join(cfg.dataDir, 'password-robot');
  const root = path.join(dir, 'root');
  fs.mkdirSync(root, { recursive: true });
  try {
    execFileSync('id', [PASSWORD_ROBOT_USER], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--no-create-home', '--shell', '/bin/sh', PASSWORD_ROBOT_USER]);
  }
  // A fresh password per run; long and random, so finding it anywhere is proof of a leak.
  const password = `pw-${crypto.randomBytes(18).toString('base64url')}`;
  execFileSync('chpasswd', [], { input: `${PASSWORD_ROBOT_USER}:${password}\n` });
  execFileSync('chown', ['-R', PASSWORD_ROBOT_USER, root]);
  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  if (!fs.existsSync(hostKey)) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  const config = path.join(dir, 'sshd_config');
  fs.writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'PubkeyAuthentication no',
      'PasswordAuthentication yes',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      `AllowUsers ${PASSWORD_ROBOT_USER}`,
      'Subsystem sftp internal-sftp',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  fs.mkdirSync('/run/sshd', { recursive: true });
  const sshd = runProcess('/usr/sbin/sshd', ['-f', config, '-D', '-e']);
  const deadline = Date.now() + 10000;
  while (!(await tcpOpen(port))) {
    if (Date.now() > deadline) throw new Error(`password robot's sshd did not listen on ${port}:\n${sshd.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host: '127.0.0.1',
    port,
    username: PASSWORD_ROBOT_USER,
    password,
    hostKeySha256: fingerprintOfPublicKey(fs.readFileSync(`${hostKey}.pub`, 'utf8')),
    root,
    sshd,
  };
}
