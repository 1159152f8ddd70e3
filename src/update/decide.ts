/** Pure decisions of the updater, tested as tables. */
import { compareVersions } from "../install/semver.ts";

export type UpdatePlan =
  | { action: "none"; reason: "upToDate" | "quarantined" }
  | { action: "install"; version: string };

/**
 * Whether to install `candidate`. An explicit `--release` may go to any
 * version (downgrades included); the loop only moves forward and never
 * retries a version that failed its health check.
 */
export function planUpdate(input: { installed: string | null; candidate: string; explicit: boolean; quarantined: readonly string[] }): UpdatePlan {
  const { installed, candidate, explicit, quarantined } = input;
  if (installed !== null && compareVersions(candidate, installed) === 0) return { action: "none", reason: "upToDate" };
  if (!explicit && installed !== null && compareVersions(candidate, installed) < 0) return { action: "none", reason: "upToDate" };
  if (!explicit && quarantined.includes(candidate)) return { action: "none", reason: "quarantined" };
  return { action: "install", version: candidate };
}

/** Restart the app-server onto the new binary only if one of ours runs and answers with another version. */
export function shouldRestart(running: { managed: boolean; version?: string } | undefined, installed: string): boolean {
  return running !== undefined && running.managed && running.version !== undefined && running.version !== installed;
}
