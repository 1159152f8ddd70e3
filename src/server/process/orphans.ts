/**
 * Orphans of session processes. A daemon that double-forks and calls setsid
 * leaves its process group and, once its parent exits, the app-server's tree:
 * re-parented to init, it outlived `stop`. The app-server (the real daemon,
 * `berth serve`, on Linux) makes itself their child subreaper instead, so
 * they are re-parented to it: provably its descendants (only a descendant can
 * be), found by the stop-time /proc walk (tree.ts) and ended like any other.
 *
 * Their exits are reaped here, on SIGCHLD: every child of this process that
 * Bun did not spawn and that has exited. Bun waits for its own children by pid
 * (pidfd + wait4, measured with strace on Bun 1.4.5), never for "any child",
 * so the two never take each other's; `isBunChild` names Bun's until Bun
 * has reported their exit.
 *
 * After a sweep that saw adopted children, `onAdopted` runs (the manager
 * records them in its ledger, so an app-server killed with SIGKILL leaves
 * them to the next one to end, as it does its own processes).
 */
import { readdirSync, readFileSync } from "node:fs";
import { listProcesses } from "../../platform/process.ts";

export type OrphanReaper = {
  /** Reaps every adopted child that has exited; returns how many. */
  sweep(): number;
  /** The adopted children alive or unreaped now: this process's children that Bun did not spawn. */
  adopted(): number[];
  stop(): void;
};

/** This process's children, from /proc/self/task/<tid>/children (every thread's), else from a full /proc scan. */
export function childrenOfSelf(): number[] {
  try {
    const pids: number[] = [];
    for (const tid of readdirSync("/proc/self/task")) {
      for (const word of readFileSync(`/proc/self/task/${tid}/children`, "latin1").split(" ")) if (word !== "") pids.push(Number(word));
    }
    return pids;
  } catch {
    // a kernel without CONFIG_PROC_CHILDREN
    return listProcesses().filter((entry) => entry.ppid === process.pid).map((entry) => entry.pid);
  }
}

/**
 * Makes this process the subreaper of its descendants and reaps the adopted
 * ones as they exit. Undefined where that is not possible (not Linux, no C
 * library, refused): orphans then go to init as before.
 */
export async function adoptOrphans(isBunChild: (pid: number) => boolean, onAdopted: () => void = () => {}): Promise<OrphanReaper | undefined> {
  if (process.platform !== "linux") return undefined;
  const ffi = await import("../../platform/ffi.ts");
  if (!ffi.becomeChildSubreaper()) return undefined;
  let scheduled = false;
  const adopted = () => childrenOfSelf().filter((pid) => !isBunChild(pid));
  const sweep = (): number => {
    scheduled = false;
    const seen = adopted();
    let reaped = 0;
    for (const pid of seen) if (ffi.reapExitedChild(pid)) reaped += 1;
    if (seen.length > 0) onAdopted();
    return reaped;
  };
  // Coalesced: a burst of exits is one sweep. After Bun's own handler, which reaps (and reports) its children.
  const onChild = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(sweep);
  };
  process.on("SIGCHLD", onChild);
  sweep(); // anything adopted before the handler was in place
  return {
    sweep,
    adopted,
    stop: () => void process.off("SIGCHLD", onChild),
  };
}
