/** `status`: everything known, running or not. Takes no lock and never fails because something is down. */
import { existsSync, readdirSync } from "node:fs";
import { describeError } from "../errors.ts";
import { compareVersions } from "../install/semver.ts";
import { probeInitialize, type ProbeResult } from "../server/client.ts";
import { CLI_VERSION } from "../version.ts";
import { isOurServer } from "./answer.ts";
import { appServerBackend } from "./backend.ts";
import { checkExistingStateDirs, managedInstall, settingsOf, versionFromReleaseDir, type Context } from "./context.ts";
import { appServerState, readKeeperState } from "./keeper.ts";
import { findUpdateLoops } from "./orphans.ts";
import type { PidRecord } from "./pid-record.ts";
import { listPids } from "../platform/process.ts";
import { updaterReport, type UpdaterReport } from "./updater.ts";
import { readWanted } from "./wanted.ts";

const STATUS_PROBE_TIMEOUT_MS = 1_500;
/** The /proc search for updaters without a record reads this many processes between two turns of the event loop. */
const ORPHAN_SCAN_SLICE = 16;

export { appServerState, type AppServerState } from "./keeper.ts";

export async function collectStatus(ctx: Context) {
  const problems: string[] = [];
  const attempt = <T>(what: string, read: () => T): T | undefined => {
    try {
      return read();
    } catch (error) {
      problems.push(`${what}: ${describeError(error)}`);
      return undefined;
    }
  };
  // An unsafe socket folder may hold someone else's socket: do not ask it anything.
  const foldersSafe = attempt("state folders", () => (checkExistingStateDirs(ctx), true)) ?? false;
  const settings = attempt("settings", () => settingsOf(ctx));
  const pidState = attempt("app-server pidfile", () => appServerBackend(ctx).inspect()) ?? { kind: "missing" as const };
  const probing: Promise<ProbeResult> = foldersSafe
    ? probeInitialize(ctx.socket.path, STATUS_PROBE_TIMEOUT_MS)
    : Promise.resolve({ kind: "absent", detail: "not probed: the state folders are unsafe" });
  const updater: UpdaterReport | undefined = attempt("updater", () => updaterReport(ctx));
  // The server answers the probe on its own core while this one searches /proc (see findUpdateLoopsBesideProbe).
  let loops: PidRecord[] = [];
  if (needsOrphanSearch(updater)) {
    try {
      loops = await findUpdateLoopsBesideProbe(ctx);
    } catch (error) {
      problems.push(`updater processes: ${describeError(error)}`);
    }
  }
  const probe = await probing;
  const answer = isOurServer(ctx, probe) ? "ours" : probe.kind === "absent" ? "none" : "foreign";
  const info = probe.kind === "berth" ? probe.info : undefined;
  const recordPid = pidState.kind === "running" ? pidState.record.pid : undefined;
  const wanted = attempt("wanted state", () => readWanted(ctx));
  const keeper = attempt("keeper state", () => readKeeperState(ctx.layout.keeperState));
  const state = appServerState({ pid: pidState.kind, answer, wanted: wanted?.appServer ?? "stopped", keeper: keeper?.state });
  const install = managedInstall(ctx);
  const untracked = loops.filter((loop) => loop.pid !== updater?.pid);
  if (untracked.length > 0) {
    problems.push(`updater: pid ${untracked.map((loop) => loop.pid).join(", ")} runs without a record (a bootstrap was interrupted); \`berth bootstrap\` ends it.`);
  }

  return {
    status: state,
    appServer: {
      state,
      backend: recordPid !== undefined ? ("pid" as const) : null,
      ...(recordPid !== undefined ? { pid: recordPid } : info ? { pid: info.pid } : {}),
      ...(info ? { version: info.serverInfo.version, instanceId: info.instanceId, startedAt: info.startedAt, remoteControl: info.remoteControl } : {}),
      answering: answer === "ours" && (recordPid === undefined || recordPid === info?.pid),
      ...(probe.kind === "foreign" ? { answeredBy: probe.detail } : {}),
      wanted: wanted?.appServer ?? null,
      restarts: keeper?.restarts ?? 0,
      ...(keeper?.lastExit ? { lastExit: keeper.lastExit } : {}),
      ...(state === "crashed" && keeper?.nextRestartAt ? { nextRestartAt: keeper.nextRestartAt } : {}),
      logPath: ctx.layout.appServerLog,
    },
    updater: updater ?? null,
    ...(updater?.pendingRestart ? { pendingRestart: updater.pendingRestart } : {}),
    settings: settings ?? null,
    managedBinaryPath: install.binaryPath,
    managedVersion: install.version,
    installed: existsSync(install.binaryPath),
    releases: listReleases(ctx, install.releaseDir),
    socketPath: ctx.socket.path,
    berthHome: ctx.layout.home,
    cliVersion: CLI_VERSION,
    ...(problems.length > 0 ? { problems } : {}),
  };
}

/**
 * Pure: whether status searches /proc for update-loops no record names. A loop loses its record only when the
 * bootstrap that launched it dies before publishing it (its reservation is then stale, and `updater.pid` reads as
 * missing or starting), or when the record is unreadable. While the record names a live loop with its identity,
 * the search, which reads every process on the machine (~10–20 µs each: 1–2 ms of a status here, ten times that
 * for root on a busy host), is skipped; `bootstrap` and `down` still search every time before they act.
 */
export function needsOrphanSearch(updater: Pick<UpdaterReport, "state"> | undefined): boolean {
  return updater?.state !== "running";
}

/**
 * findUpdateLoops over every process, a slice at a time with a turn of the event loop between slices, so
 * a socket probe started before it advances (connect, upgrade, initialize) while the scan runs, instead
 * of one waiting for the other: status paid both in a row (~0.7 ms probe, ~1-1.7 ms scan).
 */
async function findUpdateLoopsBesideProbe(ctx: Context): Promise<PidRecord[]> {
  const pids = listPids();
  const found: PidRecord[] = [];
  for (let at = 0; at < pids.length; at += ORPHAN_SCAN_SLICE) {
    found.push(...findUpdateLoops(ctx, pids.slice(at, at + ORPHAN_SCAN_SLICE)));
    await new Promise((resolve) => setImmediate(resolve));
  }
  return found;
}

function listReleases(ctx: Context, current: string | null) {
  let names: string[] = [];
  try {
    names = readdirSync(ctx.layout.releasesDir);
  } catch {
    return [];
  }
  // Oldest to newest by version (1.9.0 before 1.10.0), as a client reading the list expects.
  return names
    .flatMap((name) => {
      const version = versionFromReleaseDir(name);
      return version ? [{ name, version, current: name === current }] : [];
    })
    .sort((a, b) => compareVersions(a.version, b.version) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
