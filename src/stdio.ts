/**
 * Raw writes to the standard descriptors that survive a client going away.
 * Kept free of imports so main.ts can use it before loading anything.
 */
import { closeSync, fstatSync, openSync, writeSync } from "node:fs";

// The other half of what a parent leaves behind (signals), from here so that it lands in this module's chunk.
export { repairInheritedSignals } from "./platform/inherited.ts";

/** How long one output write may keep retrying a full non-blocking pipe before giving the output up. */
const OUTPUT_WRITE_DEADLINE_MS = 5_000;
const OUTPUT_RETRY_SLEEP_MS = 5;

/** Set by a daemon (serve, update-loop) so its output goes through its stamping, rotating log writer (src/daemon/log.ts). */
let outputRoute: ((text: string) => boolean) | undefined;

export function routeOutput(route: (text: string) => boolean): void {
  outputRoute = route;
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
  if (outputRoute && (fd === 1 || fd === 2)) return outputRoute(text);
  let bytes = Buffer.from(text);
  const deadline = Date.now() + OUTPUT_WRITE_DEADLINE_MS;
  while (bytes.length > 0) {
    try {
      const written = writeSync(fd, bytes);
      bytes = bytes.subarray(written);
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code !== "EAGAIN" || Date.now() >= deadline) return false;
      Bun.sleepSync(OUTPUT_RETRY_SLEEP_MS);
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

