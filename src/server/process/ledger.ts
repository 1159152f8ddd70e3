/**
 * A record of the session processes that run, kept in daemon/ so that an
 * app-server that died without ending them (SIGKILL, OOM, a crash) does not
 * leave them behind for ever: the next app-server ends every leftover whose
 * identity (boot id + start time) is still the recorded one, and only those.
 */
import { rmSync } from "node:fs";
import { describeError } from "../../errors.ts";
import { logger } from "../../output.ts";
import { readStateFile, writeFileAtomic } from "../../platform/fs.ts";
import { processIdentity } from "../../platform/process.ts";

/**
 * A process group's leader (ended with its group), or with `member: true` one
 * process that a reaped leader left behind in its group (ended alone: its
 * group has no leader whose identity could prove the group ours).
 */
export type LedgerEntry = { pid: number; identity: string; member?: true };

/** Pure: the entries of a ledger file's text (anything malformed is dropped). */
export function parseLedger(text: string | undefined): LedgerEntry[] {
  if (!text) return [];
  try {
    const value = JSON.parse(text) as { processes?: unknown };
    if (!Array.isArray(value.processes)) return [];
    return value.processes
      .filter((e): e is LedgerEntry => typeof e === "object" && e !== null && Number.isInteger(e.pid) && e.pid > 1 && typeof e.identity === "string")
      .map((e) => ({ pid: e.pid, identity: e.identity, ...(e.member === true ? { member: true as const } : {}) }));
  } catch {
    return [];
  }
}

/** Records the running processes; none means no file, so the next app-server need not load this module at all (api/index.ts). */
export function writeLedger(path: string, entries: LedgerEntry[]): void {
  try {
    if (entries.length === 0) rmSync(path, { force: true });
    else writeFileAtomic(path, `${JSON.stringify({ processes: entries })}\n`);
  } catch (error) {
    logger.warn(`could not record the running processes in ${path}: ${describeError(error)}`);
  }
}

/** Ends (SIGKILL to the group) every recorded process still running as recorded; returns how many. */
export function endLeftovers(path: string): number {
  let entries: LedgerEntry[] = [];
  try {
    entries = parseLedger(readStateFile(path));
  } catch (error) {
    logger.warn(`could not read ${path}: ${describeError(error)}`);
  }
  let ended = 0;
  for (const entry of entries) {
    // Each process leads its own group; the group is ours only while its leader is the recorded process.
    // A member left behind is ours only while it is the recorded process: it alone is ended.
    if (processIdentity(entry.pid) !== entry.identity) continue;
    try {
      process.kill(entry.member ? entry.pid : -entry.pid, "SIGKILL");
      ended += 1;
    } catch {
      // gone meanwhile
    }
  }
  rmSync(path, { force: true });
  if (ended > 0) logger.warn(`ended ${ended} session process(es) left behind by an app-server that did not stop cleanly`);
  return ended;
}
