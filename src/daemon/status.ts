/** `status`: everything known, running or not. Takes no lock and never fails because something is down. */
import { existsSync, readdirSync } from "node:fs";
import { describeError } from "../errors.ts";
import { probeInitialize } from "../server/client.ts";
import { CLI_VERSION } from "../version.ts";
import { isOurServer } from "./answer.ts";
import { appServerBackend } from "./app-server.ts";
import { checkExistingStateDirs, managedInstall, settingsOf, versionFromReleaseDir, type Context } from "./context.ts";
import { appServerState, readKeeperState } from "./keeper.ts";
import { findUpdateLoops } from "./orphans.ts";
import { updaterReport, type UpdaterReport } from "./updater.ts";
import { readWanted } from "./wanted.ts";

const STATUS_PROBE_TIMEOUT_MS = 1_500;

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
  const probe: Awaited<ReturnType<typeof probeInitialize>> = foldersSafe
    ? await probeInitialize(ctx.socket.path, STATUS_PROBE_TIMEOUT_MS)
    : { kind: "absent", detail: "not probed: the state folders are unsafe" };
  const answer = isOurServer(ctx, probe) ? "ours" : probe.kind === "absent" ? "none" : "foreign";
  const info = probe.kind === "berth" ? probe.info : undefined;
  const recordPid = pidState.kind === "running" ? pidState.record.pid : undefined;
  const wanted = attempt("wanted state", () => readWanted(ctx));
  const keeper = attempt("keeper state", () => readKeeperState(ctx.layout.keeperState));
  const state = appServerState({ pid: pidState.kind, answer, wanted: wanted?.appServer ?? "stopped", keeper: keeper?.state });
  const install = managedInstall(ctx);
  const updater: UpdaterReport | undefined = attempt("updater", () => updaterReport(ctx));
  const untracked = (attempt("updater processes", () => findUpdateLoops(ctx)) ?? []).filter((loop) => loop.pid !== updater?.pid);
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

function listReleases(ctx: Context, current: string | null) {
  let names: string[] = [];
  try {
    names = readdirSync(ctx.layout.releasesDir);
  } catch {
    return [];
  }
  return names
    .filter((name) => versionFromReleaseDir(name))
    .sort()
    .map((name) => ({ name, version: versionFromReleaseDir(name) as string, current: name === current }));
}
