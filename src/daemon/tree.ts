/**
 * The process tree of a process we own, remembered while we can still prove it
 * is ours. Once the leader exits, its children are reparented and its group id
 * may be reused, so /proc can no longer prove anything: what we end after that
 * is only what we saw descend from the live, identity-checked leader.
 */
import { listProcesses, processIdentity, signalProcess, treeOf } from "../platform/process.ts";

/** Between two /proc scans while waiting for a stop (each scan reads every /proc/<pid>/stat). */
export const TREE_SCAN_INTERVAL_MS = 100;

export type Straggler = { pid: number; reason: string };

export class TreeSnapshot {
  private readonly members = new Map<number, string>();
  private lastScan = 0;

  constructor(
    private readonly leader: number,
    /** True while the leader still carries its recorded identity (the only time a scan is trusted). */
    private readonly leaderIsOurs: () => boolean,
  ) {}

  /** Adds what descends from the leader now; a no-op once the leader is not provably ours. */
  scan(force = false): void {
    const now = performance.now();
    if (!force && now - this.lastScan < TREE_SCAN_INTERVAL_MS) return;
    this.lastScan = now;
    if (!this.leaderIsOurs()) return;
    const tree = treeOf(this.leader, listProcesses());
    // Re-check after the scan: a leader that exited during it may have had its pid reused.
    if (!this.leaderIsOurs()) return;
    for (const entry of tree) if (!this.members.has(entry.pid)) this.members.set(entry.pid, entry.identity);
  }

  /** Members still running with the identity they had when seen. */
  alive(): number[] {
    return [...this.members].filter(([pid, identity]) => processIdentity(pid) === identity).map(([pid]) => pid);
  }

  /** Signals each member that still carries its identity; returns the ones that refused (EPERM). */
  signal(signal: NodeJS.Signals): Straggler[] {
    const refused: Straggler[] = [];
    for (const pid of this.alive()) {
      try {
        signalProcess(pid, signal);
      } catch (error) {
        refused.push({ pid, reason: `${signal} refused: ${(error as Error).message}` });
      }
    }
    return refused;
  }

  get size(): number {
    return this.members.size;
  }
}
