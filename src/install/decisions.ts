/**
 * The pure decisions of an install, tested as tables (test/install-decisions.test.ts): which old releases
 * to delete, whether anything changed, and what to do with whatever sits at the command link's path.
 */
import { versionFromReleaseDir } from "../daemon/context.ts";
import { compareVersions } from "./semver.ts";

/** Releases kept besides `current`, newest first, for rollback. */
export const KEEP_PREVIOUS_RELEASES = 2;

/**
 * Pure: the release folders to delete. Always kept: `current` and `protect`
 * (the release being installed). Then up to `keepPrevious` others for
 * rollback: `previous` (what `current` pointed at before; an update rolls
 * back to it) first, then the newest by version. Names that are not release
 * folders are never touched. Oldest first.
 */
export function releasesToPrune(input: {
  releases: readonly string[];
  current: string | null;
  protect?: readonly string[];
  previous?: string | null;
  keepPrevious?: number;
}): string[] {
  const keepPrevious = input.keepPrevious ?? KEEP_PREVIOUS_RELEASES;
  const always = new Set([...(input.current ? [input.current] : []), ...(input.protect ?? [])]);
  const byNewest = input.releases
    .filter((name) => versionFromReleaseDir(name) !== undefined && !always.has(name))
    .sort((a, b) => compareVersions(versionFromReleaseDir(b) as string, versionFromReleaseDir(a) as string) || (a < b ? 1 : a > b ? -1 : 0));
  const kept = new Set<string>();
  if (input.previous && byNewest.includes(input.previous) && keepPrevious > 0) kept.add(input.previous);
  for (const name of byNewest) if (kept.size < keepPrevious) kept.add(name);
  return byNewest.filter((name) => !kept.has(name)).reverse();
}

export type ReleaseState = "missing" | "same" | "different";

/** Pure: nothing changed in the packages when the same bytes were already installed and current. */
export function installStatus(release: ReleaseState, currentBefore: string | null, name: string): "installed" | "alreadyInstalled" {
  return release === "same" && currentBefore === name ? "alreadyInstalled" : "installed";
}

export type LinkState =
  | { kind: "missing" }
  | { kind: "ours" }
  | { kind: "otherLink"; target: string }
  | { kind: "berthFile" }
  | { kind: "foreign"; what: "file" | "directory" | "other" };

export type LinkAction = "create" | "keep" | "replace" | "refuse";

/**
 * Pure: what to do with whatever sits at the command link's path. Symlinks
 * are ours to repoint (it is berth's name in berth's folder); a regular file
 * is replaced only if it is a berth executable; anything else is refused.
 */
export function linkAction(state: LinkState): LinkAction {
  switch (state.kind) {
    case "missing":
      return "create";
    case "ours":
      return "keep";
    case "otherLink":
    case "berthFile":
      return "replace";
    case "foreign":
      return "refuse";
  }
}
