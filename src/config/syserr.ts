// Human wording for errno codes ("EADDRINUSE" -> "EADDRINUSE (address already in use)"), from
// libuv's own table via util.getSystemErrorMap(), so the text matches what Node prints elsewhere.
// Used for unreadable config files, and for system errors (a bind that failed) wherever they are
// reported: the CLI at start and a reload's refusal word them the same way (formatSystemError).

import { getSystemErrorMap } from 'node:util';

let descriptions: Map<string, string> | undefined;

export function describeErrno(code: string): string {
  if (descriptions === undefined) {
    descriptions = new Map();
    for (const [name, text] of getSystemErrorMap().values()) descriptions.set(name, text);
  }
  const text = descriptions.get(code);
  return text === undefined ? code : `${code} (${text})`;
}

const OUT_OF_RESOURCES = new Set(['EMFILE', 'ENFILE', 'ENOMEM']);

/**
 * The process (or the system) is out of fds or memory: a failure of the moment, not of the file
 * or the worker that met it, and gone once the pressure is.
 */
export function isOutOfResources(code: string | undefined): boolean {
  return code !== undefined && OUT_OF_RESOURCES.has(code);
}

const NAMES_OUT_OF_RESOURCES = new RegExp(`\\b(${[...OUT_OF_RESOURCES].join('|')})\\b`);

/** A message that names one of those codes (an error whose code is its own, its cause in words). */
export function mentionsOutOfResources(message: string): boolean {
  return NAMES_OUT_OF_RESOURCES.test(message);
}

export interface SystemErrorShape {
  code: string;
  syscall: string;
  /** Node's net errors: the IP (and port) the operation was for. */
  address?: string;
  port?: number;
  /** The native core's errors: what the call was for, e.g. "egress 0.0.0.0:15001". */
  context?: string;
  /** Node's fs errors: the file the call was for. */
  path?: string;
}

export function isSystemError(err: unknown): err is Error & SystemErrorShape {
  return (
    err instanceof Error &&
    'code' in err &&
    typeof err.code === 'string' &&
    'syscall' in err &&
    typeof err.syscall === 'string'
  );
}

/**
 * "listen 0.0.0.0:15001: bind failed: EADDRINUSE (address already in use)": the operation and its
 * target, then the step that failed and the errno in words.
 */
export function formatSystemError(err: SystemErrorShape): string {
  let target: string | undefined;
  if (typeof err.address === 'string') {
    const host = err.address.includes(':') && typeof err.port === 'number' ? `[${err.address}]` : err.address;
    target = typeof err.port === 'number' ? `${host}:${err.port}` : host;
    // What the address is for, when the caller said (e.g. "admin"): a listener names itself too.
    if (typeof err.context === 'string' && err.context !== '') target = `${err.context} ${target}`;
  } else if (typeof err.context === 'string' && err.context !== '') {
    target = err.context;
  } else if (typeof err.path === 'string') {
    target = err.path;
  }
  // Opening a listener is one operation to the user, whichever call failed; and Node reports a
  // failed bind() as syscall "listen" (libuv defers the error), so name the step "bind".
  const listening = err.syscall === 'listen' || err.syscall === 'bind';
  const operation = listening ? 'listen' : err.syscall;
  const step = listening ? 'bind' : err.syscall;
  return `${operation}${target === undefined ? '' : ` ${target}`}: ${step} failed: ${describeErrno(err.code)}`;
}
