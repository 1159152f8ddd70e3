/**
 * `bootstrap` and the remote-control switches: persist settings, then make the
 * running processes match them.
 */
import { probeInitialize } from "../server/client.ts";
import { planRemoteListen } from "../server/remote-listen.ts";
import { ensureToken } from "../server/token.ts";
import { CLI_VERSION } from "../version.ts";
import { ensureRunning, foreignServerError, isOurServer, stopThenStart, underDaemonLock } from "./app-server.ts";
import { managedInstall, settingsOf, type Context } from "./context.ts";
import { updateSettings, type Settings } from "./settings.ts";
import { replaceUpdater } from "./updater.ts";
import { writeWanted } from "./wanted.ts";
import type { InitializeResult } from "../server/protocol.ts";

const PROBE_TIMEOUT_MS = 1_000;

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
  if (!(isOurServer(ctx, probe) && (force || needsRestart(probe.info, settings, managedInstall(ctx).version)))) {
    return (await ensureRunning(ctx, settings)).running;
  }
  return (await stopThenStart(ctx, settings)).running;
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
    // The loop is also the keeper: it runs whenever the app-server is wanted (with auto-update off it only keeps).
    const updaterPid = await replaceUpdater(ctx);
    // Under daemon.lock, so the keeper (which acts only under it) sees the new intent with the new processes.
    writeWanted(ctx, "running");
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
      updater: { pid: updaterPid, autoUpdate: settings.autoUpdate },
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
      info = (await stopThenStart(ctx, settings)).running.info;
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
