/**
 * Ending everything a session started when the app-server stops: each
 * process's group (SIGHUP for terminal sessions, SIGTERM otherwise), and every
 * descendant of the app-server found in /proc before the first signal — so a
 * grandchild that moved to its own group or session is ended too. Each
 * descendant is signalled only while its identity (boot id + start time) is
 * the one seen in that snapshot: a reused pid is never signalled.
 */
import { readdirSync, readFileSync } from "node:fs";
import { processIdentity } from "../../platform/process.ts";
import type { ManagedProcess } from "./managed.ts";

const POLL_MS = 20;
/** After SIGKILL, wait this long for the kernel to reap before reporting. */
export const KILL_REAP_WAIT_MS = 2_000;

export type ProcEntry = { pid: number; ppid: number; pgrp: number; session: number };

/** Pure: /proc/<pid>/stat → the fields we need (the command name may hold spaces and parentheses). */
export function parseStatLine(pid: number, text: string): ProcEntry | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const fields = text.slice(close + 2).trim().split(/\s+/);
  const [state, ppid, pgrp, session] = [fields[0], Number(fields[1]), Number(fields[2]), Number(fields[3])];
  if (!state || state === "Z" || state === "X" || ![ppid, pgrp, session].every(Number.isInteger)) return undefined;
  return { pid, ppid, pgrp, session };
}

/** Pure: every pid that descends from `root` in the given table. */
export function descendantsOf(root: number, entries: ProcEntry[]): ProcEntry[] {
  const children = new Map<number, ProcEntry[]>();
  for (const entry of entries) {
    const list = children.get(entry.ppid) ?? [];
    list.push(entry);
    children.set(entry.ppid, list);
  }
  const out: ProcEntry[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift() as number) ?? []) {
      out.push(child);
      queue.push(child.pid);
    }
  }
  return out;
}

function procTable(): ProcEntry[] {
  if (process.platform !== "linux") return [];
  const entries: ProcEntry[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const entry = parseStatLine(Number(name), readFileSync(`/proc/${name}/stat`, "utf8"));
      if (entry) entries.push(entry);
    } catch {
      // exited meanwhile
    }
  }
  return entries;
}

type Known = ProcEntry & { identity: string };

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

/** Ends `processes` and every descendant of this server; SIGKILL after graceMs. */
export async function endProcessTrees(processes: ManagedProcess[], graceMs: number): Promise<void> {
  const terminalSessions = new Set(processes.filter((p) => p.terminal && p.unreaped).map((p) => p.pid));
  const known: Known[] = [];
  for (const entry of descendantsOf(process.pid, procTable())) {
    const identity = processIdentity(entry.pid);
    if (identity) known.push({ ...entry, identity });
  }
  for (const managed of processes) managed.signalGroup(managed.terminal ? "SIGHUP" : "SIGTERM");
  for (const entry of known) signalKnown(entry, terminalSessions.has(entry.session) ? "SIGHUP" : "SIGTERM");
  const allGone = () => processes.every((p) => !p.unreaped) && known.every((k) => processIdentity(k.pid) !== k.identity);
  if (await waitFor(allGone, graceMs)) return;
  for (const managed of processes) managed.signalGroup("SIGKILL");
  for (const entry of known) signalKnown(entry, "SIGKILL");
  await waitFor(allGone, KILL_REAP_WAIT_MS);
}
