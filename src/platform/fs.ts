/** File primitives with the guarantees the spec asks for: 0700/0600, temp-then-rename, ownership checks. */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { BerthError, errnoCode } from "../errors.ts";

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

let tempCounter = 0;
export function tempPathFor(path: string): string {
  tempCounter += 1;
  return `${path}.tmp-${process.pid}-${tempCounter}`;
}

/**
 * Writes a file so readers see either the old content or the new, never a
 * half: write a sibling temp file, fsync it, rename it over the target.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = FILE_MODE): void {
  const temp = tempPathFor(path);
  let fd: number | undefined;
  try {
    fd = openSync(temp, "wx", mode);
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    let offset = 0;
    while (offset < bytes.byteLength) offset += writeSync(fd, bytes, offset);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(temp, path);
  } catch (error) {
    if (fd !== undefined) closeSync(fd);
    rmSync(temp, { force: true });
    throw error;
  }
}

/** Refuses a state folder that someone else owns or that others may write into. */
export function assertSafeDir(path: string): void {
  // stat, not lstat: a symlinked BERTH_HOME is the user's choice; what it points at is checked.
  const stat = statSync(path);
  const uid = process.getuid?.();
  if (!stat.isDirectory()) throw new BerthError("UNSAFE_STATE", `${path} is not a directory; move it away and retry.`);
  if (uid !== undefined && stat.uid !== uid) {
    throw new BerthError(
      "UNSAFE_STATE",
      `${path} is owned by uid ${stat.uid}, not by you (uid ${uid}); berth will not use it. Fix its ownership or choose another BERTH_HOME.`,
    );
  }
  if ((stat.mode & 0o022) !== 0) {
    const mode = (stat.mode & 0o777).toString(8).padStart(3, "0");
    throw new BerthError(
      "UNSAFE_STATE",
      `${path} is writable by group or others (mode ${mode}); run \`chmod 700 ${path}\` and retry.`,
    );
  }
}

/** mkdir -p with 0700 for what it creates, then the safety check on the folder itself. */
export function ensureSafeDir(path: string): void {
  try {
    mkdirSync(path, { recursive: true, mode: DIR_MODE });
  } catch (error) {
    if (errnoCode(error) !== "EEXIST") throw error;
  }
  assertSafeDir(path);
}

export function ensureParentDir(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: DIR_MODE });
}
