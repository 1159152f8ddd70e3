/**
 * Stopping our app-server under daemon.lock: by its record, or by adoption
 * when it answers as ours without one; a stranger is NOT_MANAGED. Split from
 * app-server.ts, which starts it (and stops it for a restart through here).
 */
import { rmSync } from "node:fs";
import { warn } from "../diagnostics.ts";
import { describeError, errnoCode } from "../errors.ts";
import { readStateFile } from "../platform/fs.ts";
import { probeInitialize } from "../server/client.ts";
import { foreignServerError, isOurServer, READY_PROBE_TIMEOUT_MS } from "./answer.ts";
import { appServerBackend, PidBackend, type StopOutcome } from "./backend.ts";
import type { Context } from "./context.ts";
import type { PidRecord } from "./pidfile.ts";
import type { Settings } from "./settings.ts";

/** A server answering as ours without a record: adoption (adoption.ts) is loaded only on this rare path. */
export async function adoptRunning(ctx: Context, backend: PidBackend, pid: number): Promise<PidRecord | undefined> {
  return (await import("./adoption.ts")).adoptProven(ctx, backend, pid);
}

export function removeLeftoverSocket(ctx: Context): void {
  try {
    rmSync(ctx.socket.path, { force: false });
    warn(`removed the leftover socket ${ctx.socket.path}: nothing answered on it.`);
  } catch {
    // nothing there
  }
}

export type StopReport = StopOutcome & { processesEnded: number };

/**
 * How many session processes the app-server with this pid ended: it writes
 * daemon/app-server.shutdown.json just before it exits (src/server/run.ts).
 * A server killed before it could write it reports 0.
 */
export function readProcessesEnded(ctx: Context, pid: number): number {
  try {
    const report = JSON.parse(readStateFile(ctx.layout.appServerShutdown) ?? "{}") as { pid?: unknown; processesEnded?: unknown };
    return report.pid === pid && typeof report.processesEnded === "number" ? report.processesEnded : 0;
  } catch {
    return 0;
  }
}

async function stopRecorded(ctx: Context, backend: PidBackend, record: PidRecord, settings: Settings, meanwhile: () => void): Promise<StopReport> {
  try {
    rmSync(ctx.layout.appServerShutdown, { force: true });
  } catch (error) {
    // Nothing in the report's place may keep the server running: not a read-only BERTH_HOME, nor a folder there
    // (rm's EISDIR) or a file that cannot go. The report is matched by pid anyway, and a folder reads as none.
    if (errnoCode(error) !== "EROFS") warn(`could not remove the old shutdown report ${ctx.layout.appServerShutdown} (${describeError(error)}); stopping all the same.`);
  }
  let ran = false;
  const outcome = await backend.stopTree(record, settings.stopGraceMs, () => {
    ran = true;
    meanwhile();
  });
  if (!ran) meanwhile();
  return { ...outcome, processesEnded: outcome.status === "stopped" ? readProcessesEnded(ctx, record.pid) : 0 };
}

/** Under daemon.lock: stop our app-server; NOT_MANAGED when a stranger answers. */
export async function ensureStopped(ctx: Context, settings: Settings): Promise<"stopped" | "notRunning"> {
  return (await ensureStoppedTree(ctx, settings)).status;
}

/**
 * ensureStopped, also saying which of the server's descendants could not be
 * ended and how many session processes the server ended on its way out.
 * `meanwhile`: work that needs the lock but not the server's exit (recording
 * the wish to stop, ~0.5 ms with its fsync); it runs while a signalled server
 * shuts down, otherwise at the end; exactly once when this succeeds.
 */
export async function ensureStoppedTree(ctx: Context, settings: Settings, meanwhile: () => void = () => {}): Promise<StopReport> {
  const backend = appServerBackend(ctx);
  const state = await backend.pidFile.waitWhileStarting(settings.startTimeoutMs + 5_000);
  if (state.kind === "running") return stopRecorded(ctx, backend, state.record, settings, meanwhile);
  const probe = await probeInitialize(ctx.socket.path, READY_PROBE_TIMEOUT_MS);
  if (isOurServer(ctx, probe)) {
    const record = await adoptRunning(ctx, backend, probe.info.pid);
    if (record) return stopRecorded(ctx, backend, record, settings, meanwhile);
  }
  if (probe.kind !== "absent") throw foreignServerError(ctx, probe);
  removeLeftoverSocket(ctx);
  meanwhile();
  return { status: "notRunning", notEnded: [], processesEnded: 0 };
}

