/**
 * Waiting for a process to exit without a sleep loop, where the platform
 * allows: on Linux ≥ 5.3 a pidfd becomes readable when its process exits, so
 * the waiter sleeps in poll(2) and wakes at the exit. Elsewhere (macOS, old
 * kernels, seccomp) it reports "unsupported" and the caller polls as before.
 */
import { closeSync } from "node:fs";
import { openPidfd, pollReadable } from "../platform/ffi.ts";
import { processIdentity } from "../platform/process.ts";
import type { PidRecord } from "./pidfile.ts";

/**
 * poll(2) blocks this thread: wake at least this often so timers, signal
 * handlers and the caller's `between` step run (the old poll loop's longest step).
 */
const EXIT_WAIT_SLICE_MS = 25;

export type ExitWait = "exited" | "timeout" | "unsupported";

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Sleeps until the recorded process (pid + identity) exits or `timeoutMs` passes; `between` runs before each slice. */
export async function sleepUntilExit(record: PidRecord, timeoutMs: number, between: () => void = () => {}): Promise<ExitWait> {
  const fd = openPidfd(record.pid);
  if (fd === undefined) return processIdentity(record.pid) === record.processStartTime ? "unsupported" : "exited";
  try {
    // The pid may have been reused before the open: the fd names our process only if the identity still matches.
    if (processIdentity(record.pid) !== record.processStartTime) return "exited";
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) return "timeout";
      between();
      if (pollReadable(fd, Math.min(left, EXIT_WAIT_SLICE_MS)) === "readable") return "exited";
      await nextTurn();
    }
  } finally {
    closeSync(fd);
  }
}
