/**
 * Updaters whose record was lost: a bootstrap killed between spawning the
 * `update-loop` and publishing updater.pid leaves one running that no record
 * names. The next command finds it in /proc — by facts about the process
 * itself, never by a group id — and ends it (or the caller adopts it).
 */
import { readFileSync, statSync } from "node:fs";
import { listPids, processArgv, processEnvValue, processIdentity } from "../platform/process.ts";
import type { StopOutcome } from "./backend.ts";
import { sameHome, type Context } from "./context.ts";
import type { PidRecord } from "./pidfile.ts";
import { updaterBackend } from "./updater.ts";

/** An orphan updater gets this long to end on SIGTERM before SIGKILL. */
export const ORPHAN_STOP_GRACE_MS = 5_000;

export type ProcessFacts = { pid: number; uid: number | undefined; argv: string[] | undefined; berthHome: string | undefined };

/** Pure: is this process an `update-loop` of this BERTH_HOME, run by us? */
export function isUpdateLoopOf(home: string, ourUid: number, facts: ProcessFacts): boolean {
  return (
    facts.pid > 1 &&
    facts.uid === ourUid &&
    facts.berthHome !== undefined &&
    sameHome(facts.berthHome, home) &&
    (facts.argv ?? []).includes("update-loop")
  );
}

function ownerUid(pid: number): number | undefined {
  try {
    return statSync(`/proc/${pid}`).uid;
  } catch {
    return undefined;
  }
}

/**
 * Pure: whether the raw text of a /proc/<pid>/cmdline (arguments each ended by a NUL) holds the argument
 * `update-loop`. A string search, not a split: it runs for every process on the machine.
 */
export function cmdlineHasUpdateLoop(cmdline: string): boolean {
  // Framed by NULs on both sides, so only a whole argument matches (a process may drop the last NUL).
  return `\0${cmdline}${cmdline.endsWith("\0") ? "" : "\0"}`.includes("\0update-loop\0");
}

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "latin1");
  } catch {
    return "";
  }
}

/**
 * Every running update-loop of this BERTH_HOME (Linux /proc; none elsewhere), as records to check identity
 * against; among `pids` when given (status searches in slices, see status.ts).
 */
export function findUpdateLoops(ctx: Context, pids: readonly number[] = listPids()): PidRecord[] {
  const ourUid = process.getuid?.() ?? 0;
  const found: PidRecord[] = [];
  // Cheapest decisive fact first. For a user most processes are someone else's, and one stat of /proc/<pid>
  // rules each out; for root nearly every process is its own, so the cmdline (one read, searched as a string,
  // which rules out nearly every process whoever runs berth) comes first. The decision itself is
  // isUpdateLoopOf, over all the facts.
  const ownerFirst = ourUid !== 0;
  for (const pid of pids) {
    if (pid === process.pid) continue;
    const owner = ownerFirst ? ownerUid(pid) : undefined;
    if (ownerFirst && owner !== ourUid) continue;
    if (!cmdlineHasUpdateLoop(cmdlineOf(pid))) continue;
    const uid = ownerFirst ? owner : ownerUid(pid);
    if (uid !== ourUid) continue;
    const facts = { pid, uid, argv: processArgv(pid), berthHome: processEnvValue(pid, "BERTH_HOME") };
    const identity = processIdentity(pid);
    if (identity !== undefined && isUpdateLoopOf(ctx.layout.home, ourUid, facts)) found.push({ pid, processStartTime: identity });
  }
  return found;
}

/**
 * Ends every update-loop of this BERTH_HOME other than `keep` (the recorded
 * one, if any), among `found` (a search made a moment earlier) or found now:
 * each is signalled only while it still carries the identity it was found
 * with, its group only while it leads it.
 */
export async function endUntrackedUpdaters(
  ctx: Context,
  keep?: PidRecord,
  found: readonly PidRecord[] = findUpdateLoops(ctx),
): Promise<{ ended: number[]; notEnded: StopOutcome["notEnded"] }> {
  const backend = updaterBackend(ctx);
  const ended: number[] = [];
  const notEnded: StopOutcome["notEnded"] = [];
  for (const orphan of found) {
    if (keep && orphan.pid === keep.pid && orphan.processStartTime === keep.processStartTime) continue;
    const outcome = await backend.stopTree(orphan, ORPHAN_STOP_GRACE_MS);
    if (outcome.status === "stopped") ended.push(orphan.pid);
    notEnded.push(...outcome.notEnded);
  }
  return { ended, notEnded };
}
