/**
 * A folder made read-only while processes use it: a bind mount over itself, remounted read-only (root only).
 * The remount fails with EBUSY ("mount point is busy") while anything writes through the new mount: a server
 * or a keeper writing its state or log just then, which under load overlaps it often (2 runs in 3 once).
 */
import { eventually } from "./berth.ts";

/** The read-only remount is tried again while the mount is busy, up to this. */
const REMOUNT_WAIT_MS = 20_000;
const REMOUNT_RETRY_MS = 50;

/** Remounts the bind mount at `path` read-only, again while it is busy; what the last attempt said when it never worked. */
export async function remountReadOnly(path: string): Promise<{ readOnly: boolean; stderr: string }> {
  let stderr = "";
  const readOnly = await eventually(() => {
    const remount = Bun.spawnSync(["mount", "-o", "remount,bind,ro", path]);
    stderr = remount.stderr.toString();
    return remount.exitCode === 0;
  }, REMOUNT_WAIT_MS, REMOUNT_RETRY_MS);
  return { readOnly, stderr };
}
