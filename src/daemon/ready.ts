/**
 * Readiness notification, in the manner of s6's notification-fd and systemd's
 * sd_notify: the starter hands the app-server the write end of a pipe as fd 3
 * and names it in BERTH_READY_FD; the server writes one byte once it listens
 * and closes the fd. The starter waits on the read end instead of polling, and
 * still confirms with one `initialize` (the notification alone proves nothing
 * about who answers on the socket).
 */
import { closeSync, writeSync } from "node:fs";

export const READY_FD_ENV = "BERTH_READY_FD";
/** The pipe is the first slot after stdin/stdout/stderr in the child. */
export const READY_FD = 3;

export type ReadyOutcome = "ready" | "closed";

export type ReadyWait = {
  /** "ready" once the byte arrives; "closed" when the pipe ends without it (the process exited, or closed fd 3). */
  outcome: Promise<ReadyOutcome>;
  /** Stops waiting and releases the read end. */
  cancel(): void;
};

/** Starter side: waits on the read end `fd` (from Bun.spawn's extra "pipe" slot), which it now owns. */
export function waitForReady(fd: number): ReadyWait {
  const reader = Bun.file(fd).stream().getReader();
  const outcome = reader.read().then(
    (chunk) => (chunk.done || chunk.value.byteLength === 0 ? "closed" : "ready") as ReadyOutcome,
    () => "closed" as const,
  );
  // Whatever the outcome, the read end is no longer needed (cancel closes it).
  void outcome.then(() => reader.cancel().catch(() => {}));
  return { outcome, cancel: () => void reader.cancel().catch(() => {}) };
}

/** Pure: the fd named by the environment, when it is a plausible inherited one. */
export function readyFdFrom(env: NodeJS.ProcessEnv): number | undefined {
  const value = env[READY_FD_ENV];
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const fd = Number(value);
  return fd >= READY_FD ? fd : undefined;
}

/**
 * Server side, once it listens: one byte to the inherited fd, then close it and
 * drop the variable so nothing the server launches inherits either. A starter
 * that already gave up (closed its end) is not an error: it confirms with
 * `initialize` anyway.
 */
export function notifyReady(env: NodeJS.ProcessEnv = process.env): void {
  const fd = readyFdFrom(env);
  delete env[READY_FD_ENV];
  if (fd === undefined) return;
  try {
    writeSync(fd, "\n");
  } catch {
    // EPIPE: nobody waits any more
  }
  try {
    closeSync(fd);
  } catch {
    // not open (a stale variable)
  }
}
