/**
 * Readiness of a launched app-server: wait (on the readiness pipe, with
 * fallback probes) until our pid answers `initialize`, and the NOT_READY
 * errors, with the log tail, when it does not. A server we just launched and
 * that never answered is stopped; one that already ran is never stopped for
 * being slow.
 */
import { closeSync, fstatSync, readSync } from "node:fs";
import { BerthError } from "../errors.ts";
import { openStateFile, STATE_READ_FLAGS } from "../platform/fs.ts";
import { processState } from "../platform/process.ts";
import { probeInitialize } from "../server/client.ts";
import type { InitializeResult } from "../server/protocol.ts";
import type { PidBackend } from "./backend.ts";
import { READY_PROBE_TIMEOUT_MS } from "./answer.ts";
import { managedInstall, type Context } from "./context.ts";
import type { PidRecord } from "./pidfile.ts";
import type { ReadyOutcome, ReadyWait } from "./ready.ts";
import type { Settings } from "./settings.ts";

export { READY_PROBE_TIMEOUT_MS } from "./answer.ts";
const READY_POLL_MS = 10;
/**
 * With a readiness pipe the starter probes only once notified; these bound the
 * back-off of the fallback probes for a server that never writes to the pipe
 * (a release older than the notification).
 */
const READY_FALLBACK_FIRST_MS = 200;
const READY_FALLBACK_MAX_MS = 1_000;
/** A server that failed readiness gets this long to exit on SIGTERM before SIGKILL. */
const FAILED_START_GRACE_MS = 2_000;
const LOG_TAIL_BYTES = 2_048;

/** The last lines of a log, for error messages. */
export function logTail(path: string, maxBytes = LOG_TAIL_BYTES): string {
  try {
    const fd = openStateFile(path, STATE_READ_FLAGS);
    try {
      const size = fstatSync(fd).size;
      const length = Math.min(size, maxBytes);
      const buffer = Buffer.alloc(length);
      readSync(fd, buffer, 0, length, size - length);
      const text = buffer.toString("utf8").trimEnd();
      return text === "" ? "(log is empty)" : text;
    } finally {
      closeSync(fd);
    }
  } catch {
    return "(no log)";
  }
}


/** Resolves with the notification's outcome, or "later" after `ms`. */
async function notifiedWithin(ready: ReadyWait, ms: number): Promise<ReadyOutcome | "later"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const later = new Promise<"later">((resolve) => (timer = setTimeout(() => resolve("later"), ms)));
  try {
    return await Promise.race([ready.outcome, later]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits for our pid to answer `initialize`; on failure leaves nothing running
 * and reports NOT_READY. Given the launch's readiness pipe, it sleeps on the
 * pipe and probes once notified (or, for a server that never notifies, after a
 * backing-off fallback delay); without one, or once the pipe has ended, it
 * polls every READY_POLL_MS. `fresh`: we just launched it (a server that already
 * ran and is only slow is never stopped here).
 */
export async function awaitReady(ctx: Context, backend: PidBackend, record: PidRecord, settings: Settings, ready?: ReadyWait, fresh = true): Promise<InitializeResult> {
  const deadline = performance.now() + settings.startTimeoutMs;
  let pending = ready;
  let fallbackMs = READY_FALLBACK_FIRST_MS;
  let exited = false;
  try {
    while (performance.now() < deadline) {
      if (!backend.isAlive(record)) {
        exited = true;
        break;
      }
      if (pending) {
        const outcome = await notifiedWithin(pending, Math.min(fallbackMs, Math.max(1, deadline - performance.now())));
        if (outcome === "later") fallbackMs = Math.min(fallbackMs * 2, READY_FALLBACK_MAX_MS);
        else pending = undefined;
        if (!backend.isAlive(record)) continue;
      }
      const probe = await probeInitialize(ctx.socket.path, Math.min(READY_PROBE_TIMEOUT_MS, Math.max(1, deadline - performance.now())));
      if (probe.kind === "berth" && probe.info.pid === record.pid) return probe.info;
      if (!pending) await Bun.sleep(READY_POLL_MS);
    }
  } finally {
    ready?.cancel();
  }
  // A server we just launched and that never answered is ours to clean up; one that
  // already ran (stopped with SIGSTOP, or just slow) is slow, not broken: leave it.
  if (!exited && !fresh) throw slowServer(ctx, record);
  if (!exited) await backend.stop(record, FAILED_START_GRACE_MS);
  else backend.pidFile.removeIfHolds(record);
  throw notReady(ctx, exited ? `exited before answering initialize` : `did not answer initialize within ${settings.startTimeoutMs} ms and was stopped`);
}

/** NOT_READY for a recorded, running server that does not answer: never stopped for being slow. */
export function slowServer(ctx: Context, record: PidRecord): BerthError {
  const state = processState(record.pid);
  return new BerthError(
    "NOT_READY",
    `the recorded app-server pid ${record.pid} runs${state === "T" || state === "t" ? " but is stopped (SIGSTOP; resume it with `kill -CONT " + record.pid + "`)" : ""} and did not answer on ${ctx.socket.path} in time; berth left it running. Retry, or \`berth restart\` it.`,
  );
}

export function notReady(ctx: Context, what: string): BerthError {
  const install = managedInstall(ctx);
  return new BerthError(
    "NOT_READY",
    `the app-server ${install.binaryPath} (version ${install.version ?? "unknown"}) ${what}. Last lines of ${ctx.layout.appServerLog}:\n${logTail(ctx.layout.appServerLog)}`,
  );
}
