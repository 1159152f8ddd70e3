/**
 * Raw writes to the standard descriptors that survive a client going away.
 * Kept free of imports (but node:fs and the likewise bare platform/inherited.ts)
 * so main.ts can use it before loading anything.
 */
import { closeSync, fstatSync, openSync, writeSync } from "node:fs";

// The other half of what a parent leaves behind (signals), from here so that it lands in this module's chunk.
export { dropBunRuntimeEnv, repairInheritedSignals } from "./platform/inherited.ts";

/**
 * How long a write may wait on a full non-blocking pipe (O_NONBLOCK set by whoever shares it: ssh, Node) whose
 * reader takes nothing before giving the output up; each byte taken starts it again. A blocking pipe waits
 * for its reader as long as it lives: a slow reader (a pager, `| while read`) must not lose output either.
 */
const OUTPUT_STALL_DEADLINE_MS = 60_000;
/** Retries of a full non-blocking pipe back off from the first sleep to the last. */
const OUTPUT_RETRY_SLEEP_MS = 5;
const OUTPUT_RETRY_SLEEP_MAX_MS = 100;

/** Set by a daemon (serve, update-loop) so its output goes through its stamping, rotating log writer (src/daemon/log.ts). */
let outputRoute: ((text: string) => boolean) | undefined;
/** The descriptors it takes: stdout and stderr, or stderr alone for a keeper step (its stdout is /dev/null). */
let routedFds: readonly number[] = [1, 2];

export function routeOutput(route: (text: string) => boolean, fds: readonly number[] = [1, 2]): void {
  outputRoute = route;
  routedFds = fds;
}

/** Whether writeOutput to stdout/stderr goes through a daemon's log writer yet. */
export function outputIsRouted(): boolean {
  return outputRoute !== undefined;
}

/**
 * Writes all of `text` to a descriptor and never throws: the reader may be
 * gone (EPIPE, a closed pipe), the terminal hung up (EIO), or the descriptor
 * closed (EBADF). A client that stops listening must not crash a command or
 * stop it half-way (spec: output rules), so such output is dropped.
 * Returns whether everything was written.
 */
export function writeOutput(fd: number, text: string): boolean {
  if (outputRoute && routedFds.includes(fd)) return outputRoute(text);
  let bytes = Buffer.from(text);
  let deadline = Date.now() + OUTPUT_STALL_DEADLINE_MS;
  let sleepMs = OUTPUT_RETRY_SLEEP_MS;
  while (bytes.length > 0) {
    try {
      const written = writeSync(fd, bytes);
      bytes = bytes.subarray(written);
      // Only a byte taken is progress: a write of 0 must not keep the deadline away for ever.
      if (written > 0) {
        deadline = Date.now() + OUTPUT_STALL_DEADLINE_MS;
        sleepMs = OUTPUT_RETRY_SLEEP_MS;
      } else if (Date.now() >= deadline) return false;
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code !== "EAGAIN" || Date.now() >= deadline) return false;
      Bun.sleepSync(sleepMs);
      sleepMs = Math.min(sleepMs * 2, OUTPUT_RETRY_SLEEP_MAX_MS);
    }
  }
  return true;
}

/** True for a terminal, /dev/null and other character devices (one fstat, no stream objects). */
export function isCharacterDevice(fd: number): boolean {
  return fstatSync(fd, { throwIfNoEntry: false })?.isCharacterDevice() ?? false;
}

/**
 * A closed stdin/stdout/stderr (`berth start >&-`) would let the next opened
 * file (a lock, a socket) take descriptor 1 and receive the JSON line. Give each
 * missing standard descriptor /dev/null instead, before anything else opens.
 */
export function reopenClosedStdio(): void {
  for (const fd of [0, 1, 2]) {
    try {
      fstatSync(fd);
    } catch {
      try {
        const opened = openSync("/dev/null", fd === 0 ? "r" : "w");
        if (opened !== fd) closeSync(opened);
      } catch {
        // no /dev/null: nothing better to do; writes are already error-proof
      }
    }
  }
}

