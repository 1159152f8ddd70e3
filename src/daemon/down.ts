/** `down` and the hidden `keep`: the keeper and the app-server together. */
import { warn } from "../diagnostics.ts";
import { describeError, isBerthError } from "../errors.ts";
import { ensureStoppedTree, underDaemonLock } from "./app-server.ts";
import { prepareStateDirs, settingsOrDefaults, type Context } from "./context.ts";
import { DAEMON_LOCK_WAIT_MS, withLock } from "./lock.ts";
import { ensureKeeper, stopUpdater } from "./updater.ts";
import { readWanted, wantedChange } from "./wanted.ts";

export type DownResult = {
  status: "down";
  appServer: "stopped" | "notRunning";
  keeper: "stopped" | "notRunning";
  socketPath: string;
  /** Like `stop`: how many session processes the app-server ended on its way out. */
  processesEnded: number;
  /** Like `stop`: descendants of the server that outlived it and could not be ended. */
  notEnded?: { pid: number; reason: string }[];
};

/** Under daemon.lock: stop the app-server, want it stopped, stop the keeper. Nothing comes back until start/bootstrap. */
export async function down(ctx: Context): Promise<DownResult> {
  // Like `stop`: defaults stand in for a corrupt settings.json, which must not keep anything running
  // (nor block `uninstall`, which begins with `down`).
  prepareStateDirs(ctx);
  return withLock(ctx.layout.daemonLock, DAEMON_LOCK_WAIT_MS, async () => {
    const settings = settingsOrDefaults(ctx);
    // Staged first: a full disk fails `down` here, before the server is stopped and while its keeper
    // would otherwise start it again for want of the new wish.
    const wish = wantedChange(ctx, "stopped", { down: true });
    wish.stage();
    let report: Awaited<ReturnType<typeof ensureStoppedTree>>;
    try {
      report = await ensureStoppedTree(ctx, settings);
    } catch (error) {
      if (!isBerthError(error, "STOP_TIMEOUT")) {
        wish.undo();
        throw error;
      }
      // The server got its SIGKILL and ends once the kernel lets it: nothing may bring it back then.
      wish.write();
      try {
        await stopUpdater(ctx);
      } catch (keeperError) {
        warn(`the keeper could not be stopped either: ${describeError(keeperError)}`);
      }
      throw error;
    }
    wish.write();
    const keeper = (await stopUpdater(ctx)) ? "stopped" : "notRunning";
    return {
      status: "down",
      appServer: report.status,
      keeper,
      socketPath: ctx.socket.path,
      processesEnded: report.processesEnded,
      ...(report.notEnded.length > 0 ? { notEnded: report.notEnded } : {}),
    };
  });
}

/** What the startup entry runs: make sure the keeper runs; it starts the app-server if it is wanted. After `down`, nothing. */
export async function keep(ctx: Context) {
  return underDaemonLock(ctx, async () => {
    if (readWanted(ctx).down) return { status: "down" as const, logPath: ctx.layout.updaterLog };
    const keeper = await ensureKeeper(ctx);
    return { status: keeper.launched ? "started" : "alreadyRunning", ...(keeper.pid !== undefined ? { pid: keeper.pid } : {}), logPath: ctx.layout.updaterLog };
  });
}
