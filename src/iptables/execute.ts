// Runs a plan's steps one by one (never through a shell: every argument goes to execve as is) and
// stops at the first command that fails, naming it and what it printed on stderr.

import { execFile } from 'node:child_process';
import type { Argv, Probe, Step } from './plan';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs one command; the seam tests replace. Resolves even on a non-zero exit. */
export type Runner = (argv: Argv) => Promise<CommandResult>;

/** A command of the plan failed (exit 1), or could not be started at all. */
export class CommandFailedError extends Error {}

/** Guards against a `while` step whose delete "succeeds" without removing anything. */
const MAX_REPEATS = 64;
const COMMAND_TIMEOUT_MS = 30_000;

export const execRunner: Runner = (argv) =>
  new Promise((resolve, reject) => {
    const [file, ...args] = argv;
    if (file === undefined) {
      reject(new CommandFailedError('empty command'));
      return;
    }
    execFile(file, args, { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err === null) {
        resolve({ code: 0, stdout, stderr });
        return;
      }
      if (typeof err.code === 'number') {
        resolve({ code: err.code, stdout, stderr });
        return;
      }
      if (err.code === 'ENOENT') {
        const hint =
          file === 'ip'
            ? 'install iproute2'
            : `install iptables (either backend, nft or legacy: splicegate uses whichever '${file}' is; driving nft directly is not supported yet)`;
        reject(new CommandFailedError(`${file} not found in PATH: ${hint}`));
        return;
      }
      reject(new CommandFailedError(`${argv.join(' ')}: ${err.killed ? `timed out after ${COMMAND_TIMEOUT_MS} ms` : err.message}`));
    });
  });

async function holds(run: Runner, probe: Probe): Promise<boolean> {
  const r = await run(probe.argv);
  return r.code === 0 && (probe.truth === 'exit' || r.stdout.trim() !== '');
}

async function must(run: Runner, argv: Argv): Promise<void> {
  const r = await run(argv);
  if (r.code !== 0) {
    const why = r.stderr.trim() || r.stdout.trim() || 'no output';
    throw new CommandFailedError(`command failed (exit ${r.code}): ${argv.join(' ')}\n  ${why.split('\n').join('\n  ')}`);
  }
}

/** Executes the steps in order; returns how many commands changed something. */
export async function executePlan(steps: Step[], run: Runner = execRunner): Promise<number> {
  let changes = 0;
  for (const step of steps) {
    switch (step.kind) {
      case 'run':
        await must(run, step.argv);
        changes += 1;
        break;
      case 'unless':
        if (!(await holds(run, step.probe))) {
          await must(run, step.argv);
          changes += 1;
        }
        break;
      case 'while': {
        let n = 0;
        while (await holds(run, step.probe)) {
          if (++n > MAX_REPEATS) throw new CommandFailedError(`still present after ${MAX_REPEATS} deletions: ${step.probe.argv.join(' ')}`);
          await must(run, step.argv);
          changes += 1;
        }
        break;
      }
      case 'if':
        if (await holds(run, step.probe)) {
          for (const argv of step.argvs) await must(run, argv);
          changes += step.argvs.length;
        }
        break;
    }
  }
  return changes;
}
