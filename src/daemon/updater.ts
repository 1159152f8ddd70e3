/**
 * The updater process as the daemon sees it: a pidfile-backed process group,
 * plus the outcome of its last check (written by the loop in src/update/).
 */
import { errnoCode } from "../errors.ts";
import { readStateFile, writeFileAtomic } from "../platform/fs.ts";
import { PidBackend } from "./backend.ts";
import type { Context } from "./context.ts";

export type UpdaterCheck = {
  at: string;
  outcome: "upToDate" | "updateAvailable" | "updated" | "rolledBack" | "failed" | "deferred" | "quarantined" | "notInRollout";
  message: string;
  latestVersion?: string;
  /** The error code of a failed check (e.g. SIGNATURE_INVALID). */
  code?: string;
};

/** A restart onto `version` the loop holds back while session processes run (src/update/defer.ts). */
export type PendingRestart = { version: string; since: string; runningProcesses: number };

export type UpdaterState = {
  pendingRestart?: PendingRestart;
  lastCheck?: UpdaterCheck;
  nextCheckAt?: string;
  quarantined: string[];
  /** ETag / Last-Modified of the last verified latest.json, for a conditional GET (src/update/release.ts). */
  latestValidators?: unknown;
};

export type UpdaterReport = {
  pendingRestart?: PendingRestart;
  state: "running" | "starting" | "stopped";
  pid?: number;
  lastCheck?: UpdaterCheck;
  nextCheckAt?: string;
  quarantined: string[];
  logPath: string;
};

export function updaterBackend(ctx: Context): PidBackend {
  return new PidBackend({ pidPath: ctx.layout.updaterPid, trackGroup: true });
}

export function readUpdaterState(path: string): UpdaterState {
  try {
    const parsed = JSON.parse(readStateFile(path) ?? "{}") as unknown;
    // `null`, a number or an array holds no history: treat it as empty rather than crash the loop.
    const value = (parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {}) as Partial<UpdaterState>;
    return { ...value, quarantined: Array.isArray(value.quarantined) ? value.quarantined.filter((v) => typeof v === "string") : [] };
  } catch (error) {
    // Missing is normal; a damaged state file only loses history, never settings.
    if (errnoCode(error) !== "ENOENT" && !(error instanceof SyntaxError)) throw error;
    return { quarantined: [] };
  }
}

export function writeUpdaterState(path: string, state: UpdaterState): void {
  writeFileAtomic(path, `${JSON.stringify(state, null, 2)}\n`);
}

export function updaterReport(ctx: Context): UpdaterReport {
  const pidState = updaterBackend(ctx).inspect();
  const saved = readUpdaterState(ctx.layout.updaterState);
  return {
    state: pidState.kind === "running" ? "running" : pidState.kind === "starting" ? "starting" : "stopped",
    ...(pidState.kind === "running" ? { pid: pidState.record.pid } : {}),
    ...(saved.lastCheck ? { lastCheck: saved.lastCheck } : {}),
    ...(saved.nextCheckAt && pidState.kind === "running" ? { nextCheckAt: saved.nextCheckAt } : {}),
    quarantined: saved.quarantined,
    logPath: ctx.layout.updaterLog,
    ...(saved.pendingRestart && pidState.kind === "running" ? { pendingRestart: saved.pendingRestart } : {}),
  };
}
