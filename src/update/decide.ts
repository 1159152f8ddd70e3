/** Pure decisions of the updater, tested as tables. */
import { compareVersions } from "../install/semver.ts";

export type UpdatePlan =
  | { action: "none"; reason: "upToDate" | "quarantined" | "notInRollout" }
  | { action: "install"; version: string };

export type PlanInput = {
  installed: string | null;
  candidate: string;
  /** `--release`: any version, downgrades included. */
  explicit: boolean;
  quarantined: readonly string[];
  /** The candidate's `rolloutPercent` and this machine's bucket; undefined percent means everyone. */
  rollout?: { percent?: number; bucket: number };
  /** `berth update` by hand ignores the rollout; the loop honours it. */
  manual?: boolean;
};

/**
 * Whether to install `candidate`. An explicit `--release` may go to any
 * version (downgrades included); the loop only moves forward, never retries a
 * version that failed its health check, and waits for this machine's turn in
 * a phased rollout. An older candidate (a replayed signed latest.json) is
 * never a reason to move.
 */
export function planUpdate(input: PlanInput): UpdatePlan {
  const { installed, candidate, explicit, quarantined, rollout, manual } = input;
  if (installed !== null && compareVersions(candidate, installed) === 0) return { action: "none", reason: "upToDate" };
  if (!explicit && installed !== null && compareVersions(candidate, installed) < 0) return { action: "none", reason: "upToDate" };
  if (!explicit && quarantined.includes(candidate)) return { action: "none", reason: "quarantined" };
  if (!explicit && !manual && rollout && !inRollout(rollout.bucket, rollout.percent)) return { action: "none", reason: "notInRollout" };
  return { action: "install", version: candidate };
}

/** A machine takes a phased release when its bucket (0–99) is below the rollout percentage. */
export function inRollout(bucket: number, percent: number | undefined): boolean {
  return percent === undefined || bucket < percent;
}

/** A machine id's stable bucket, 0–99: the first 4 bytes of its SHA-256, mod 100. */
export function rolloutBucket(machineId: string): number {
  const digest = new Bun.CryptoHasher("sha256").update(machineId).digest();
  return new DataView(digest.buffer, digest.byteOffset, 4).getUint32(0) % 100;
}

/** Restart the app-server onto the new binary only if one of ours runs and answers with another version. */
export function shouldRestart(running: { managed: boolean; version?: string } | undefined, installed: string): boolean {
  return running !== undefined && running.managed && running.version !== undefined && running.version !== installed;
}
