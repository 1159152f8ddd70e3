/**
 * Ending everything a session started when the app-server stops: each
 * process's group (SIGHUP for terminal sessions, SIGTERM otherwise), and every
 * descendant of the app-server found in /proc before the first signal — so a
 * grandchild that moved to its own group or session is ended too. Each
 * descendant is signalled only while its identity (boot id + start time) is
 * the one seen in that snapshot: a reused pid is never signalled.
 */
import { listProcesses, processIdentity, treeOf, type ProcessEntry } from "../../platform/process.ts";
import type { ManagedProcess } from "./managed.ts";

const POLL_MS = 20;
/** After SIGKILL, wait this long for the kernel to reap before reporting. */
export const KILL_REAP_WAIT_MS = 2_000;

type Known = ProcessEntry & { signal: NodeJS.Signals };

function signalKnown(known: Known, signal: NodeJS.Signals): void {
  if (processIdentity(known.pid) !== known.identity) return;
  try {
    process.kill(known.pid, signal);
  } catch {
    // gone meanwhile
  }
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    await Bun.sleep(POLL_MS);
  }
  return true;
}

/**
 * Called right after Bun reaped the leader `pid` of a session process: the
 * processes it left in its group and their descendants (reparented away from
 * this server, so the stop-time /proc walk would miss them), by identity.
 * Empty when `pid` already names another process: nothing is provably ours.
 */
export function leftBehind(pid: number): ProcessEntry[] {
  const table = listProcesses();
  if (table.some((entry) => entry.pid === pid)) return [];
  const found = new Map<number, ProcessEntry>();
  for (const member of treeOf(pid, table)) {
    found.set(member.pid, member);
    for (const descendant of treeOf(member.pid, table)) found.set(descendant.pid, descendant);
  }
  return [...found.values()];
}

/**
 * Ends `processes`, every descendant of this server, and `leftovers` (see
 * leftBehind) still running as recorded; SIGKILL after graceMs.
 */
export async function endProcessTrees(processes: ManagedProcess[], graceMs: number, leftovers: ProcessEntry[] = []): Promise<void> {
  const table = listProcesses();
  const underTerminals = new Set<number>();
  for (const managed of processes) {
    if (managed.terminal && managed.unreaped) for (const entry of treeOf(managed.pid, table)) underTerminals.add(entry.pid);
  }
  const known: Known[] = treeOf(process.pid, table).map((entry) => ({ ...entry, signal: underTerminals.has(entry.pid) ? "SIGHUP" : "SIGTERM" }));
  const seen = new Set(known.map((entry) => entry.pid));
  for (const entry of leftovers) if (!seen.has(entry.pid)) known.push({ ...entry, signal: "SIGTERM" });
  for (const managed of processes) managed.signalGroup(managed.terminal ? "SIGHUP" : "SIGTERM");
  for (const entry of known) signalKnown(entry, entry.signal);
  // A stopped process (process/signal SIGSTOP, a job suspended with ^Z) keeps that signal pending until the
  // SIGKILL after the grace: continued now, it gets to end by it (as systemd and bash do on hangup).
  for (const managed of processes) managed.signalGroup("SIGCONT");
  for (const entry of known) signalKnown(entry, "SIGCONT");
  const allGone = () => processes.every((p) => !p.unreaped) && known.every((k) => processIdentity(k.pid) !== k.identity);
  if (await waitFor(allGone, graceMs)) return;
  for (const managed of processes) managed.signalGroup("SIGKILL");
  for (const entry of known) signalKnown(entry, "SIGKILL");
  await waitFor(allGone, KILL_REAP_WAIT_MS);
}
