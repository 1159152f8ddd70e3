/** File primitives with the guarantees the spec asks for: 0700/0600, temp-then-rename, ownership checks. */
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, lstatSync, mkdirSync, openSync, readSync, realpathSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { BerthError, errnoCode } from "../errors.ts";

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** Names tried for one temp file; past the first, each carries random bytes, so taking them all is luck no one has. */
export const TEMP_NAME_ATTEMPTS = 4;

/** How tempPathFor's names end: what a writer killed between creating and renaming leaves behind. */
export const TEMP_NAME_PATTERN = /\.tmp-\d+-\d+(?:-[0-9a-f]+)?$/;

let tempCounter = 0;
/** A sibling temp name of `path`: pid and counter, plus random bytes on a retry (`attempt` > 0). */
export function tempPathFor(path: string, attempt = 0): string {
  tempCounter += 1;
  const name = `${path}.tmp-${process.pid}-${tempCounter}`;
  return attempt === 0 ? name : `${name}-${Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString("hex")}`;
}

/**
 * Creates a fresh temp sibling of `path` with `create` (which must fail with
 * EEXIST when the name is taken: open "wx", symlink) and returns its name and
 * what `create` returned. A taken name — left by a writer killed mid-write
 * whose pid this process reuses, as every run of a container starts at the
 * same pid — is never opened, followed or removed: the next name is tried.
 */
export function createTemp<T>(path: string, create: (temp: string) => T): { temp: string; value: T } {
  for (let attempt = 0; ; attempt += 1) {
    const temp = tempPathFor(path, attempt);
    try {
      return { temp, value: create(temp) };
    } catch (error) {
      if (errnoCode(error) !== "EEXIST" || attempt + 1 >= TEMP_NAME_ATTEMPTS) throw error;
    }
  }
}

/**
 * A state file's next content, begun ahead: `commit` puts it in place (with `data`, or as staged when the
 * content was known then), `abandon` drops it; each at most once.
 */
export type StagedWrite = {
  commit(data?: string | Uint8Array, options?: { durable?: boolean }): void;
  abandon(): void;
};

/**
 * Begins a write of `path` that readers see whole or not at all: a fresh temp
 * sibling holding `staged` (the content, or that many bytes of room), so a
 * full disk (ENOSPC, EDQUOT) fails here, before the caller acts on anything,
 * rather than in `commit` after it has (stopped a server, spawned one).
 * `commit(data)` overwrites the room with `data` (no new blocks while it
 * fits: tmpfs, ext4, xfs; a copy-on-write file system may still need some)
 * and cuts the rest; then it fsyncs unless `durable: false` and renames the
 * temp over `path`.
 */
export function stageWrite(path: string, staged: string | Uint8Array | number, mode = FILE_MODE): StagedWrite {
  let created: { temp: string; value: number };
  try {
    created = createTemp(path, (name) => openSync(name, "wx", mode));
  } catch (error) {
    // No inode left (ENOSPC while `df -h` shows space), a read-only disk: named after the state file, not the temp.
    throw namingFile(error, path);
  }
  const temp = created.temp;
  let fd: number | undefined = created.value;
  const abandon = () => {
    if (fd === undefined) return;
    closeSync(fd);
    fd = undefined;
    rmSync(temp, { force: true });
  };
  // Writes `data` from offset 0; returns its length in bytes. A string goes to the kernel as it is, without
  // a Buffer of ours: Buffer's first use costs ~0.1 ms, and a stop pays this write before it signals.
  const writeAt = (data: string | Uint8Array): number => {
    let offset = 0;
    if (typeof data === "string") {
      offset = writeSync(fd as number, data, 0);
      const length = Buffer.byteLength(data);
      if (offset === length) return length;
      data = Buffer.from(data);
    }
    while (offset < data.byteLength) offset += writeSync(fd as number, data, offset, data.byteLength - offset, offset);
    return data.byteLength;
  };
  let room = 0;
  try {
    room = writeAt(typeof staged === "number" ? new Uint8Array(staged) : staged);
  } catch (error) {
    abandon();
    throw namingFile(error, path);
  }
  return {
    commit(data, options = {}) {
      if (fd === undefined) throw new Error(`the staged write of ${path} was already committed or abandoned`);
      try {
        if (data !== undefined) {
          const length = writeAt(data);
          if (length < room) ftruncateSync(fd, length);
        }
        if (options.durable !== false) fsyncSync(fd);
        closeSync(fd);
        fd = undefined;
        renameSync(temp, path);
      } catch (error) {
        if (fd !== undefined) closeSync(fd);
        fd = undefined;
        rmSync(temp, { force: true });
        throw namingFile(error, path);
      }
    },
    abandon,
  };
}

/**
 * A write's errno error named after the file it was for: one from an fd names no file, one from the temp's
 * open or rename names the temp, which the user never sees and which is gone by then.
 */
function namingFile(error: unknown, path: string): unknown {
  const named = (error as { path?: unknown }).path;
  if (errnoCode(error) !== undefined && (typeof named !== "string" || named.startsWith(`${path}.tmp-`))) Object.assign(error as object, { path });
  return error;
}

/**
 * Writes a file so readers see either the old content or the new, never a
 * half: write a sibling temp file, fsync it, rename it over the target.
 * `durable: false` skips the fsync, for state that means nothing after a
 * reboot anyway (a pid record names this boot's processes): readers still
 * never see half a file; a power cut may leave the old one, or an empty one.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = FILE_MODE, options: { durable?: boolean } = {}): void {
  stageWrite(path, data, mode).commit(undefined, options);
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

function ownerIsTrusted(uid: number): boolean {
  const ours = process.getuid?.();
  return ours === undefined || uid === ours || uid === 0;
}

/**
 * Pure-ish walk: the managed binary, and every folder from BERTH_HOME down to
 * it (after resolving links such as `current`), must be owned by the user or
 * root and not writable by group or others; the first path that is not is
 * UNSAFE_STATE. A binary resolving outside BERTH_HOME is refused too.
 */
export function assertTrustedBinary(home: string, binaryPath: string): void {
  const realHome = realpathSync(home);
  const realBinary = realpathSync(binaryPath);
  const rel = relative(realHome, realBinary);
  if (rel === "" || rel.startsWith("..") || rel.startsWith(sep)) {
    throw new BerthError(
      "UNSAFE_STATE",
      `the managed binary ${binaryPath} resolves to ${realBinary}, outside ${realHome}; berth launches only what lives in BERTH_HOME. Reinstall with \`berth install\`.`,
    );
  }
  let path = realHome;
  const chain = [path];
  for (const part of rel.split(sep)) {
    path = join(path, part);
    chain.push(path);
  }
  for (const entry of chain) {
    const stat = lstatSync(entry);
    if (!ownerIsTrusted(stat.uid)) {
      throw new BerthError(
        "UNSAFE_STATE",
        `${entry} is owned by uid ${stat.uid}, neither you nor root, so berth will not launch ${binaryPath} through it. Fix its ownership (chown) or reinstall.`,
      );
    }
    if ((stat.mode & 0o022) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(3, "0");
      throw new BerthError(
        "UNSAFE_STATE",
        `${entry} is writable by group or others (mode ${mode}), so someone else could have replaced ${binaryPath}; berth did not launch it. Run \`chmod go-w ${entry}\` after checking its content, or reinstall.`,
      );
    }
  }
}

/** Flags for opening a state file: never through a symlink, never blocking on a FIFO. */
export const STATE_READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
export const STATE_APPEND_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK;
/** State files are small; anything larger is not ours. */
export const STATE_FILE_MAX_BYTES = 1024 * 1024;

/** UNSAFE_STATE for a state path that is a symlink (ELOOP under O_NOFOLLOW) or not a regular file. */
function unsafeStateFile(path: string, what: string): BerthError {
  return new BerthError("UNSAFE_STATE", `${path} ${what}; berth does not follow or read it. Move it away (check who made it first) and retry.`);
}

/**
 * Opens a state file without following a symlink and refuses anything but a
 * regular file (a FIFO would hang a reader). The caller closes the fd.
 */
export function openStateFile(path: string, flags: number, mode = FILE_MODE): number {
  let fd: number;
  try {
    fd = openSync(path, flags, mode);
  } catch (error) {
    if (errnoCode(error) === "ELOOP") throw unsafeStateFile(path, "is a symbolic link");
    if (errnoCode(error) === "EISDIR") throw unsafeStateFile(path, "is a directory");
    if (errnoCode(error) === "ENXIO") throw unsafeStateFile(path, "is a FIFO or socket");
    throw error;
  }
  const stat = fstatSync(fd);
  if (!stat.isFile()) {
    closeSync(fd);
    const kind = stat.isDirectory() ? "a directory" : stat.isFIFO() ? "a FIFO" : stat.isSocket() ? "a socket" : "a device or other special file";
    throw unsafeStateFile(path, `is ${kind}, not a regular file`);
  }
  return fd;
}

/** Opens an existing state file for reading (see openStateFile); undefined when it does not exist. */
export function openExistingStateFile(path: string): number | undefined {
  try {
    return openStateFile(path, STATE_READ_FLAGS);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw error;
  }
}

/** Reads a small state file safely (see openStateFile); undefined when missing. */
export function readStateFile(path: string, maxBytes = STATE_FILE_MAX_BYTES): string | undefined {
  const fd = openExistingStateFile(path);
  if (fd === undefined) return undefined;
  try {
    const size = fstatSync(fd).size;
    if (size > maxBytes) throw unsafeStateFile(path, `is ${size} bytes, larger than a state file can be (${maxBytes})`);
    const buffer = Buffer.alloc(size);
    let offset = 0;
    while (offset < size) {
      const read = readSync(fd, buffer, offset, size - offset, offset);
      if (read === 0) break;
      offset += read;
    }
    return buffer.subarray(0, offset).toString("utf8");
  } finally {
    closeSync(fd);
  }
}
