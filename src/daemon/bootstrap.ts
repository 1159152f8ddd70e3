/**
 * `bootstrap` and the remote-control switches: persist settings, then make the
 * running processes match them.
 */
import { BerthError } from "../errors.ts";
import { probeInitialize } from "../server/client.ts";
import { planRemoteListen } from "../server/remote-listen.ts";
import { ensureToken } from "../server/token.ts";
import { CLI_VERSION } from "../version.ts";
import { ensureRunning, ensureStopped, foreignServerError, isOurServer, logTail, underDaemonLock } from "./app-server.ts";
import { ExitedAtLaunch } from "./backend.ts";
import { managedInstall, settingsOf, type Context } from "./context.ts";
import { updateSettings, type Settings } from "./settings.ts";
import { endUntrackedUpdaters } from "./orphans.ts";
import { updaterBackend } from "./updater.ts";
import { warn } from "../diagnostics.ts";
import type { InitializeResult } from "../server/protocol.ts";

/** The updater gets this long to end on SIGTERM before its group is killed. */
const UPDATER_STOP_GRACE_MS = 10_000;
const PROBE_TIMEOUT_MS = 1_000;
const STARTING_WAIT_MS = 15_000;

/** Refuses, before anything is persisted, a remote-control listen address the app-server would refuse. */
function checkRemoteListen(ctx: Context, settings: Settings): void {
  planRemoteListen({ listen: settings.remoteControl.listen, tls: settings.remoteControl.tls, saved: undefined, settingsFile: ctx.layout.settingsFile });
}

/** Pure: does the running app-server differ from what the settings and install now say? */
export function needsRestart(info: InitializeResult, settings: Settings, managedVersion: string | null): boolean {
  return info.remoteControl.enabled !== settings.remoteControlEnabled || (managedVersion !== null && info.serverInfo.version !== managedVersion);
}

/**
 * Makes the app-server run with the current settings: start it if it is down,
 * restart it if it runs with other settings or another version.
 */
async function applyToAppServer(ctx: Context, settings: Settings, force: boolean) {
  const probe = await probeInitialize(ctx.socket.path, PROBE_TIMEOUT_MS);
  if (probe.kind !== "absent" && !isOurServer(ctx, probe)) throw foreignServerError(ctx, probe);
  if (isOurServer(ctx, probe) && (force || needsRestart(probe.info, settings, managedInstall(ctx).version))) {
    await ensureStopped(ctx, settings);
  }
  return (await ensureRunning(ctx, settings)).running;
}

export async function stopUpdater(ctx: Context): Promise<boolean> {
  const backend = updaterBackend(ctx);
  const state = await backend.pidFile.waitWhileStarting(STARTING_WAIT_MS);
  const stopped = state.kind === "running" && (await backend.stop(state.record, UPDATER_STOP_GRACE_MS)) === "stopped";
  // A loop whose record was lost (its bootstrap killed before publishing) is ended too.
  const orphans = await endUntrackedUpdaters(ctx);
  if (orphans.ended.length > 0) warn(`ended updater pid ${orphans.ended.join(", ")}: it ran without a record.`);
  return stopped || orphans.ended.length > 0;
}

/** Exactly one updater: stop whichever runs, then launch a new one from the managed binary. */
async function replaceUpdater(ctx: Context): Promise<number> {
  await stopUpdater(ctx);
  try {
    const launched = await updaterBackend(ctx).launch({
      binary: ctx.layout.managedBinary,
      args: ["update-loop"],
      cwd: ctx.layout.home,
      env: { ...ctx.env, BERTH_HOME: ctx.layout.home },
      logPath: ctx.layout.updaterLog,
    });
    return launched.record.pid;
  } catch (error) {
    if (!(error instanceof ExitedAtLaunch)) throw error;
    throw new BerthError("START_FAILED", `the updater exited at once. Last lines of ${ctx.layout.updaterLog}:\n${logTail(ctx.layout.updaterLog)}`);
  }
}

/** `remoteControl`: true turns it on, false (`--no-remote-control`) turns it off, undefined keeps the setting. */
export async function bootstrap(ctx: Context, options: { remoteControl?: boolean; autoUpdate: boolean }) {
  return underDaemonLock(ctx, async () => {
    // Refuse before persisting anything when a stranger holds the socket.
    const probe = await probeInitialize(ctx.socket.path, PROBE_TIMEOUT_MS);
    if (probe.kind !== "absent" && !isOurServer(ctx, probe)) throw foreignServerError(ctx, probe);
    if (options.remoteControl) checkRemoteListen(ctx, settingsOf(ctx));
    const settings = updateSettings(ctx.layout.settingsFile, {
      autoUpdate: options.autoUpdate,
      ...(options.remoteControl !== undefined ? { remoteControlEnabled: options.remoteControl } : {}),
    }, ctx.env);
    if (settings.remoteControlEnabled) ensureToken(ctx.layout.tokenFile);
    const running = await applyToAppServer(ctx, settings, false);
    const updaterPid = settings.autoUpdate ? await replaceUpdater(ctx) : undefined;
    if (!settings.autoUpdate) await stopUpdater(ctx);
    return {
      status: "bootstrapped" as const,
      backend: running.managed ? ("pid" as const) : null,
      ...(running.pid !== undefined ? { pid: running.pid } : {}),
      autoUpdateEnabled: settings.autoUpdate,
      remoteControlEnabled: settings.remoteControlEnabled,
      managedBinaryPath: ctx.layout.managedBinary,
      managedVersion: managedInstall(ctx).version,
      socketPath: ctx.socket.path,
      cliVersion: CLI_VERSION,
      appServerVersion: running.info?.serverInfo.version ?? null,
      ...(running.info?.remoteControl.url ? { remoteControl: { url: running.info.remoteControl.url, tokenPath: ctx.layout.tokenFile } } : {}),
      ...(updaterPid !== undefined ? { updater: { pid: updaterPid } } : {}),
    };
  });
}

/** Persists the setting; a running app-server is restarted so the change takes effect now. */
export async function setRemoteControl(ctx: Context, enabled: boolean) {
  return underDaemonLock(ctx, async (current) => {
    const probe = await probeInitialize(ctx.socket.path, PROBE_TIMEOUT_MS);
    if (probe.kind !== "absent" && !isOurServer(ctx, probe)) throw foreignServerError(ctx, probe);
    if (enabled) checkRemoteListen(ctx, current);
    const changed = current.remoteControlEnabled !== enabled;
    const settings = changed ? updateSettings(ctx.layout.settingsFile, { remoteControlEnabled: enabled }, ctx.env) : current;
    if (enabled) ensureToken(ctx.layout.tokenFile);
    let info = isOurServer(ctx, probe) ? probe.info : undefined;
    if (info && info.remoteControl.enabled !== enabled) {
      await ensureStopped(ctx, settings);
      info = (await ensureRunning(ctx, settings)).running.info;
    }
    const status = enabled ? (changed ? "enabled" : "alreadyEnabled") : changed ? "disabled" : "alreadyDisabled";
    return {
      status,
      ...(info ? { backend: "pid" as const } : {}),
      remoteControlEnabled: enabled,
      socketPath: ctx.socket.path,
      cliVersion: CLI_VERSION,
      ...(info ? { appServerVersion: info.serverInfo.version } : {}),
      ...(enabled && info?.remoteControl.url ? { remoteControl: { url: info.remoteControl.url, tokenPath: ctx.layout.tokenFile } } : {}),
    };
  });
}
