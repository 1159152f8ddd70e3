/**
 * Signal state berth's own process inherited from whoever started it (a
 * script, `curl … | sh`, cron, a Python daemon, a CI harness). Dispositions
 * set to "ignore" and blocked signals survive exec, and supervisors (systemd,
 * s6, runit) reset both before they run a service; berth must do the same for
 * the two that break it:
 * - SIGCHLD ignored: the kernel reaps berth's children itself, so Bun's
 *   waitpid fails with ECHILD: `await child.exited` rejects and spawnSync
 *   reports exit code null (install's and doctor's checks, `remote`'s ssh,
 *   the app-server's process/spawn).
 * - a blocked mask: Bun.spawn hands the calling thread's mask to the child,
 *   so the app-server, the keeper and users' processes (`process/kill`
 *   SIGTERM, Ctrl-C) would ignore the signals the parent had blocked.
 * Every other ignored signal is the parent's wish and is kept (`nohup berth
 * logs --follow` stays immune to SIGHUP). Bun's children get default
 * dispositions; their mask is berth's, cleared here.
 *
 * On Linux one read of /proc/self/status decides, and the C library is loaded
 * only when something is wrong. Elsewhere SIGCHLD is reset without looking
 * (no file tells), and a blocked mask is left as it is.
 */
import { readFileSync } from "node:fs";

/** SIGCHLD's number on Linux (every architecture berth targets). */
const SIGCHLD_LINUX = 17;

export type SignalState = { blocked: bigint; ignored: bigint };
export type SignalRepairs = { resetChild: boolean; unblockAll: boolean };

function signalBit(signal: number): bigint {
  return 1n << BigInt(signal - 1);
}

/** Pure: the blocked and ignored sets (SigBlk, SigIgn) of a /proc/<pid>/status text, or undefined when either is missing. */
export function parseSignalState(status: string): SignalState | undefined {
  const field = (name: string): bigint | undefined => {
    const match = new RegExp(`^${name}:\\s*([0-9a-fA-F]{1,16})\\s*$`, "m").exec(status);
    return match ? BigInt(`0x${match[1]}`) : undefined;
  };
  const blocked = field("SigBlk");
  const ignored = field("SigIgn");
  return blocked === undefined || ignored === undefined ? undefined : { blocked, ignored };
}

/** Pure: what must be undone of an inherited state (Linux signal numbers). */
export function signalRepairs(state: SignalState): SignalRepairs {
  return { resetChild: (state.ignored & signalBit(SIGCHLD_LINUX)) !== 0n, unblockAll: state.blocked !== 0n };
}

/** Sets SIGCHLD back to its default: adding and removing a listener leaves Bun's handler off and SIG_DFL in place. */
function resetChildSignal(): void {
  const noop = () => {};
  process.on("SIGCHLD", noop);
  process.off("SIGCHLD", noop);
}

/** Undoes an ignored SIGCHLD and a blocked signal mask (see the module comment); before berth spawns or waits on anything. */
export async function repairInheritedSignals(): Promise<void> {
  if (process.platform !== "linux") {
    resetChildSignal();
    return;
  }
  let state: SignalState | undefined;
  try {
    state = parseSignalState(readFileSync("/proc/self/status", "latin1"));
  } catch {
    return; // no /proc: nothing tells, and nothing is changed
  }
  if (!state) return;
  const repairs = signalRepairs(state);
  if (repairs.resetChild) resetChildSignal();
  if (repairs.unblockAll) (await import("./ffi.ts")).unblockAllSignals();
}
