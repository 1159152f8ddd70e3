/**
 * The command link `$BERTH_INSTALL_DIR/berth -> $BERTH_HOME/packages/standalone/current/berth`: checked
 * before anything changes (a path taken by something that is not berth's is refused), then pointed at
 * the managed binary with one rename.
 */
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, readSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { warn } from "../diagnostics.ts";
import { BerthError } from "../errors.ts";
import { linkAction, type LinkState } from "./decisions.ts";
import { COMPARE_CHUNK_BYTES, replaceWithSymlink, step } from "./release.ts";

/**
 * Every berth executable contains this text (it is in this module). A regular
 * file at the command link's path is replaced only if it contains it too —
 * typically the downloaded berth the user ran `./berth install` from.
 */
export const BERTH_EXECUTABLE_MARKER = "berth-executable:7c1d5e0a";

function fileContains(path: string, needle: string): boolean {
  const pattern = Buffer.from(needle);
  const chunk = Buffer.alloc(COMPARE_CHUNK_BYTES + pattern.length);
  const fd = openSync(path, "r");
  try {
    let carried = 0;
    for (;;) {
      const read = readSync(fd, chunk, carried, COMPARE_CHUNK_BYTES, null);
      if (read === 0) return false;
      const filled = carried + read;
      if (chunk.subarray(0, filled).includes(pattern)) return true;
      carried = Math.min(pattern.length - 1, filled);
      chunk.copy(chunk, 0, filled - carried, filled);
    }
  } finally {
    closeSync(fd);
  }
}

function inspectLink(link: string, managedBinary: string): LinkState {
  const stat = lstatSync(link, { throwIfNoEntry: false });
  if (!stat) return { kind: "missing" };
  if (stat.isSymbolicLink()) {
    const target = readlinkSync(link);
    return target === managedBinary ? { kind: "ours" } : { kind: "otherLink", target };
  }
  if (stat.isFile()) return fileContains(link, BERTH_EXECUTABLE_MARKER) ? { kind: "berthFile" } : { kind: "foreign", what: "file" };
  return { kind: "foreign", what: stat.isDirectory() ? "directory" : "other" };
}

/** Before anything changes: refuse a command link path taken by something that is not berth's. */
export function checkCommandLink(link: string, managedBinary: string): LinkState {
  const state = step("inspect", link, () => inspectLink(link, managedBinary));
  if (linkAction(state) === "refuse") {
    const what = state.kind === "foreign" ? state.what : "file";
    throw new BerthError(
      "INSTALL_FAILED",
      `${link} exists and is a ${what} that is not berth; nothing was installed. Move it away, or choose another folder with BERTH_INSTALL_DIR, and run the install again.`,
    );
  }
  return state;
}

/** Points the command link at the managed binary (absolute), with one rename. */
export function ensureCommandLink(link: string, managedBinary: string, state: LinkState): void {
  const dir = dirname(link);
  step("create the folder", dir, () => mkdirSync(dir, { recursive: true }));
  // Temp links a killed install left next to ours.
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (entry.startsWith(`${basename(link)}.tmp-`) && lstatSync(path).isSymbolicLink()) rmSync(path, { force: true });
  }
  if (linkAction(state) === "keep") return;
  step("point the command link", link, () => replaceWithSymlink(link, managedBinary),
    `The release is installed; run ${managedBinary} directly, or fix ${dir} and run the install again.`);
  if (state.kind === "otherLink") warn(`${link} pointed at ${state.target}; it now points at ${managedBinary}.`);
}
