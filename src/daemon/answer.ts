/**
 * Who answers on the control socket, and the lifecycle result built from it:
 * shared by every lifecycle command, and all that `version` needs. Kept free
 * of the launch, stop, lock and FFI code: in the compiled binary each module
 * on a command's path costs its load, and `version` (run by clients again and
 * again) loaded 100 KB of them to read one record (see the commit's numbers).
 */
import { BerthError } from "../errors.ts";
import { readStateFile } from "../platform/fs.ts";
import { probeInitialize, type ProbeResult } from "../server/client.ts";
import type { InitializeResult } from "../server/protocol.ts";
import { CLI_VERSION } from "../version.ts";
import { checkExistingStateDirs, managedInstall, sameHome, type Context } from "./context.ts";
import { parsePidFile } from "./pid-record.ts";

/** One readiness probe (and the probes of start, stop and restart) may take this long before we try again. */
export const READY_PROBE_TIMEOUT_MS = 1_000;
/** `version` waits this long for an answer. */
export const VERSION_PROBE_TIMEOUT_MS = 3_000;

export type LifecycleStatus = "started" | "alreadyRunning" | "stopped" | "notRunning" | "restarted" | "running";

export type LifecycleResult = {
  /** `stop` only: descendants of the server that outlived it and could not be ended. */
  notEnded?: { pid: number; reason: string }[];
  status: LifecycleStatus;
  backend: "pid" | null;
  pid?: number;
  managedBinaryPath: string;
  managedVersion: string | null;
  socketPath: string;
  cliVersion: string;
  appServerVersion?: string;
  /** stop/restart: how many session processes the app-server ended on its way out. */
  processesEnded?: number;
};

export type Running = { pid?: number; managed: boolean; info?: InitializeResult };

export function result(ctx: Context, status: LifecycleStatus, running?: Running): LifecycleResult {
  return {
    status,
    backend: running?.managed ? "pid" : null,
    ...(running?.pid !== undefined ? { pid: running.pid } : {}),
    managedBinaryPath: ctx.layout.managedBinary,
    managedVersion: managedInstall(ctx).version,
    socketPath: ctx.socket.path,
    cliVersion: CLI_VERSION,
    ...(running?.info ? { appServerVersion: running.info.serverInfo.version } : {}),
  };
}

export function isOurServer(ctx: Context, probe: ProbeResult): probe is { kind: "berth"; info: InitializeResult } {
  return probe.kind === "berth" && sameHome(probe.info.berthHome, ctx.layout.home);
}

export function foreignServerError(ctx: Context, probe: ProbeResult): BerthError {
  const detail = probe.kind === "berth" ? `a berth app-server of ${probe.info.berthHome} (pid ${probe.info.pid})` : "something that is not a berth app-server";
  return new BerthError(
    "NOT_MANAGED",
    `${detail} answers on ${ctx.socket.path}, and no berth record of ${ctx.layout.home} owns it; nothing was touched. Stop it yourself, or remove the socket if it is stale.`,
  );
}

/** No lock: asks the running app-server who it is. */
export async function appServerVersion(ctx: Context): Promise<LifecycleResult> {
  checkExistingStateDirs(ctx);
  const probe = await probeInitialize(ctx.socket.path, VERSION_PROBE_TIMEOUT_MS);
  if (probe.kind === "absent") {
    throw new BerthError("NOT_RUNNING", `no app-server answers on ${ctx.socket.path}; start it with \`berth start\`.`);
  }
  if (!isOurServer(ctx, probe)) {
    // Something accepts but does not answer: if it is our recorded server (the kernel says so), it is slow, not foreign.
    await throwIfOurSlowServer(ctx, probe);
    throw foreignServerError(ctx, probe);
  }
  // Only whether the record names the pid that answered: its liveness is proven by the answer itself.
  const content = parsePidFile(readStateFile(ctx.layout.appServerPid));
  const managed = content.kind === "record" && content.record.pid === probe.info.pid;
  return result(ctx, "running", { pid: probe.info.pid, managed, info: probe.info });
}

/** The slow branch of `version`, loaded only when taken: NOT_READY when the peer on our socket is our recorded server. */
async function throwIfOurSlowServer(ctx: Context, probe: ProbeResult): Promise<void> {
  const [{ appServerBackend }, { unixSocketPeer }, { slowServer }] = await Promise.all([
    import("./backend.ts"),
    import("../platform/ffi.ts"),
    import("./await-ready.ts"),
  ]);
  const recorded = appServerBackend(ctx).inspect();
  if (probe.kind === "foreign" && recorded.kind === "running" && unixSocketPeer(ctx.socket.path)?.pid === recorded.record.pid) throw slowServer(ctx, recorded.record);
}
