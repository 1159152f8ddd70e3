/**
 * The control socket's fallback folder (spec "Socket path"), when the socket
 * cannot live in BERTH_HOME. Its name, `berth-<uid>-<8 hex>` in
 * $XDG_RUNTIME_DIR or /tmp, is predictable: in /tmp another local user can
 * create it first (a folder of theirs, or a symlink). berth never uses such a
 * folder (a squatter could listen in it as our app-server), and it does not
 * give up either (that would let anyone stop berth for good): it makes a
 * folder of its own with an unpredictable name next to it (mkdtemp, 0700)
 * and records the folder in use in `daemon/socket-dir`, where every client
 * (status, version, connect, stop, doctor, uninstall, the keeper) looks
 * first. The record also keeps clients whose XDG_RUNTIME_DIR differs (an
 * @reboot cron job has none) on the folder the app-server uses.
 */
import { lstatSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { basename, dirname, isAbsolute, join } from "node:path";
import { BerthError, errnoCode } from "../errors.ts";
import { DIR_MODE, readStateFile, writeFileAtomic } from "../platform/fs.ts";
import { SOCKET_DIR_SUFFIX, SOCKET_FILE_NAME, SOCKET_PATH_MAX_BYTES, urlSafePath, type Layout, type SocketPlan } from "../platform/paths.ts";
import { warn } from "../diagnostics.ts";
import type { FileLock } from "./lock.ts";

/** Choosing and recording a folder takes a few ms; a second chooser waits this long for the first. */
const SOCKET_DIR_LOCK_WAIT_MS = 5_000;

/** What a fallback folder is to us, by lstat (never through a symlink). */
export type FolderState = "missing" | "ours" | { mode: number } | { taken: string };

/** Pure: the state of a folder from its lstat (undefined: it does not exist). */
export function folderState(stat: { isSymbolicLink(): boolean; isDirectory(): boolean; uid: number; mode: number } | undefined, uid: number): FolderState {
  if (!stat) return "missing";
  if (stat.isSymbolicLink()) return { taken: "is a symbolic link" };
  if (!stat.isDirectory()) return { taken: "is not a directory" };
  if (stat.uid !== uid) return { taken: `is owned by uid ${stat.uid}, not by you (uid ${uid})` };
  return (stat.mode & 0o777) === DIR_MODE ? "ours" : { mode: stat.mode & 0o777 };
}

function stateOf(path: string): FolderState {
  let stat;
  try {
    stat = lstatSync(path);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return "missing";
    throw error;
  }
  return folderState(stat, process.getuid?.() ?? 0);
}

/**
 * Pure: whether `recorded` (the content of daemon/socket-dir) may name the
 * fallback folder of `plan`: an absolute, URL-safe path short enough for every
 * client, whose name is the plan's (`berth-<uid>-<hash>`) or that name plus
 * mkdtemp's suffix. Its folder must still be checked (ours, 0700, not a link).
 */
export function recordedFolder(recorded: string | undefined, plan: SocketPlan, platform: string = process.platform): string | undefined {
  if (!plan.fallbackDir || recorded === undefined) return undefined;
  const dir = recorded.trim();
  const name = basename(plan.fallbackDir);
  const nameOk = basename(dir) === name || new RegExp(`^${name}-[A-Za-z0-9]{${SOCKET_DIR_SUFFIX.length - 1}}$`).test(basename(dir));
  const path = join(dir, SOCKET_FILE_NAME);
  const fits = Buffer.byteLength(path) <= (SOCKET_PATH_MAX_BYTES[platform] ?? 103);
  return nameOk && isAbsolute(dir) && dirname(dir) !== dir && urlSafePath(dir) && fits ? dir : undefined;
}

/** The record's text; undefined when missing or unreadable (a symlink, a FIFO: not a record; a mutating command replaces it). */
function recordText(layout: Layout): string | undefined {
  try {
    return readStateFile(layout.socketDirFile, 4_096);
  } catch {
    return undefined;
  }
}

function readRecord(layout: Layout, plan: SocketPlan): string | undefined {
  const dir = recordedFolder(recordText(layout), plan);
  return dir !== undefined && stateOf(dir) === "ours" ? dir : undefined;
}

function planIn(dir: string): SocketPlan {
  return { path: join(dir, SOCKET_FILE_NAME), fallbackDir: dir };
}

/**
 * The socket plan every command uses: `plan` itself when the socket lives in
 * BERTH_HOME (no disk access: the usual case); with a fallback, the folder
 * daemon/socket-dir records while it is still ours, else the plan's.
 */
export function recordedSocketPlan(layout: Layout, plan: SocketPlan): SocketPlan {
  if (!plan.fallbackDir) return plan;
  const recorded = readRecord(layout, plan);
  return recorded ? planIn(recorded) : plan;
}

/**
 * Read-only commands: the fallback folder is used only when it is ours and
 * 0700 (or does not exist yet); UNSAFE_STATE otherwise, naming the way out.
 */
export function checkSocketDir(plan: SocketPlan): void {
  if (!plan.fallbackDir) return;
  const state = stateOf(plan.fallbackDir);
  if (state === "missing" || state === "ours") return;
  throw unsafeFolder(plan.fallbackDir, state);
}

function unsafeFolder(dir: string, state: { mode: number } | { taken: string }): BerthError {
  if ("mode" in state) {
    return new BerthError(
      "UNSAFE_STATE",
      `the socket folder ${dir} has mode ${state.mode.toString(8).padStart(3, "0")}, not 700; berth did not use it. Run \`chmod 700 ${dir}\` (or remove it) and retry.`,
    );
  }
  return new BerthError(
    "UNSAFE_STATE",
    `the socket folder ${dir} ${state.taken}; someone else may have created it first, so berth does not use it. \`berth start\` makes a private folder of its own next to it instead.`,
  );
}

/**
 * Mutating commands: makes sure the fallback folder exists, is ours and
 * 0700, and is the one daemon/socket-dir records, and returns the plan in it.
 * A recorded folder that is still ours is kept; else the plan's folder is
 * created; one someone else holds (another owner, a symlink, not a folder)
 * gives way to a fresh unpredictable one. Our own folder with a loose mode is
 * refused (UNSAFE_STATE: no repair behind the user's back). Under a short
 * flock, so two commands never record two folders.
 */
export function ensureSocketDir(layout: Layout, plan: SocketPlan): SocketPlan {
  if (!plan.fallbackDir) return plan;
  const fallbackDir = plan.fallbackDir;
  const lock = socketDirLock(layout);
  try {
    const recorded = readRecord(layout, plan);
    if (recorded) return planIn(recorded);
    let state = stateOf(fallbackDir);
    if (state === "missing") {
      try {
        mkdirSync(fallbackDir, { mode: DIR_MODE });
      } catch (error) {
        if (errnoCode(error) !== "EEXIST") throw error;
      }
      state = stateOf(fallbackDir);
    }
    let dir = fallbackDir;
    if (state === "missing") throw unsafeFolder(fallbackDir, { taken: "vanished as it was created" });
    if (state !== "ours" && "mode" in state) throw unsafeFolder(fallbackDir, state);
    if (state !== "ours") {
      dir = mkdtempSync(`${fallbackDir}-`);
      const made = stateOf(dir);
      if (made !== "ours") throw unsafeFolder(dir, made === "missing" ? { taken: "vanished as it was created" } : made);
      warn(`the socket folder ${fallbackDir} ${state.taken}; someone else may have created it first. berth uses ${dir} instead (recorded in ${layout.socketDirFile}).`);
    }
    if (recordText(layout) !== `${dir}\n`) writeRecord(layout, dir);
    return planIn(dir);
  } finally {
    lock?.release();
  }
}

/**
 * On a read-only BERTH_HOME (EROFS) the record cannot change: `stop` still stops, in the plan's folder. Elsewhere
 * a record that cannot be written fails the command (UNSAFE_STATE for a planted link, a full disk).
 */
function writeRecord(layout: Layout, dir: string): void {
  try {
    writeFileAtomic(layout.socketDirFile, `${dir}\n`);
  } catch (error) {
    if (errnoCode(error) !== "EROFS") throw error;
  }
}

/** The flock that serializes choosing and recording a folder; none on a read-only BERTH_HOME without its file. */
function socketDirLock(layout: Layout): FileLock | undefined {
  // Loaded here: status and version read the record without a lock, and without the FFI behind one.
  const { FileLock } = require("./lock.ts") as typeof import("./lock.ts");
  const path = `${layout.socketDirFile}.lock`;
  let lock: FileLock | undefined;
  try {
    lock = FileLock.acquireSync(path, SOCKET_DIR_LOCK_WAIT_MS);
  } catch (error) {
    // Read-only (the lock file could be neither created nor opened): nothing here can change the record either.
    if (errnoCode(error) === "ENOENT" || errnoCode(error) === "EROFS") return undefined;
    throw error;
  }
  if (lock) return lock;
  throw new BerthError("LOCK_TIMEOUT", `another berth command still holds ${path} after ${SOCKET_DIR_LOCK_WAIT_MS / 1000} s; wait for it to finish and retry.`);
}

/**
 * Uninstall: removes the folders of this home's socket that are ours (the
 * recorded one and the plan's; never through a symlink) and reports in `kept`
 * one someone else holds.
 */
export function removeSocketDirs(layout: Layout, plan: SocketPlan, basePlan: SocketPlan, removed: string[], kept: string[]): void {
  const dirs = [...new Set([plan.fallbackDir, basePlan.fallbackDir].filter((dir): dir is string => dir !== undefined))];
  for (const dir of dirs) {
    const state = stateOf(dir);
    if (state === "missing") continue;
    if (state === "ours" || "mode" in state) {
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    } else {
      kept.push(`${dir} (it ${state.taken}: not berth's, left alone)`);
    }
  }
  if (dirs.length > 0) rmSync(layout.socketDirFile, { force: true });
}
