/**
 * The fs/* family: files and folders with the user's own permissions. Every
 * handler turns an errno into the spec's code (fs-errors.ts); none can take
 * the server down. Watches live in fs-watch.ts.
 */
import { constants, type Stats } from "node:fs";
import { chown, lstat, mkdir, open, readdir, readlink, realpath, rename, rm, rmdir, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { absPath, base64, bool, int, optional, params } from "./params.ts";
import { fsError, textField } from "./fs-errors.ts";
import { createWatches } from "./fs-watch.ts";
import { API_INVALID_PARAMS, API_LIMIT, ApiError, method, type ApiFamily, type Conn } from "./types.ts";

/** The most one fs/readFile call returns (spec). */
export const READ_MAX_BYTES = 4 * 1024 * 1024;
/**
 * fs/readFile calls that run at once, server-wide (each holds up to 4 MiB
 * plus its reply); the rest wait their turn holding nothing. 200 pipelined
 * 4 MiB reads took the server to 2.3 GiB without it.
 */
export const READS_AT_ONCE = 4;
/** fs/readFile reads in pieces of this size, so memory follows the bytes actually read. */
const READ_CHUNK_BYTES = 256 * 1024;
/** A listing larger than this is refused (-32001): its reply would be tens of MiB in one frame. */
export const LIST_MAX_ENTRIES = 100_000;
/**
 * fs/readDirectory calls that run at once, server-wide (each holds its names,
 * their lstat results and its reply); the rest wait their turn holding
 * nothing. 100 pipelined listings of a 20 000-entry folder took the server to
 * 2.7 GiB, and froze it for a minute, without it.
 */
export const LISTS_AT_ONCE = 4;

type EntryType = "file" | "directory" | "symlink" | "other";

function typeOf(stats: Pick<Stats, "isFile" | "isDirectory" | "isSymbolicLink">): EntryType {
  if (stats.isSymbolicLink()) return "symlink";
  if (stats.isFile()) return "file";
  if (stats.isDirectory()) return "directory";
  return "other";
}

/** Runs an fs operation, mapping its errno onto the spec's codes. */
async function attempt<T>(what: string, path: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw fsError(error, what, path);
  }
}

async function readRange(path: string, offset: number, length: number) {
  // O_NONBLOCK: a FIFO or device must not hang a worker; only regular files are read.
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) {
      throw new ApiError(API_INVALID_PARAMS, `invalid params: path ${JSON.stringify(path)} is not a regular file`, {
        errno: stats.isDirectory() ? "EISDIR" : "EINVAL",
      });
    }
    // Only what the file holds (a 5-byte file must not cost 4 MiB per call); a size-0 file
    // (procfs, sysfs) may still have content: it is read in chunks up to `length`.
    const wanted = stats.size > 0 ? Math.min(length, Math.max(0, stats.size - offset)) : length;
    const chunks: Buffer[] = [];
    let filled = 0;
    while (filled < wanted) {
      const chunk = Buffer.allocUnsafe(Math.min(wanted - filled, READ_CHUNK_BYTES));
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, offset + filled);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      filled += bytesRead;
    }
    const eof = filled < length || offset + filled >= stats.size;
    return { data: Buffer.concat(chunks, filled).toString("base64"), size: stats.size, eof };
  } finally {
    await handle.close();
  }
}

/** The real file a write lands on: a symlink's target, so a write through a link edits the file, not the link. */
async function writeTarget(path: string): Promise<{ path: string; stats?: Stats }> {
  try {
    const real = await realpath(path);
    return { path: real, stats: await lstat(real) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { path };
    throw error;
  }
}

/** Whole-file write: a temp file beside the target, the old mode and owner kept, then one rename. */
async function writeWhole(path: string, data: Uint8Array): Promise<number> {
  const target = await writeTarget(path);
  if (target.stats && !target.stats.isFile()) {
    // Renaming a regular file over a device, FIFO or socket would replace it (as root: /dev/null).
    throw new ApiError(API_INVALID_PARAMS, `invalid params: path ${JSON.stringify(path)} is not a regular file; only append writes go to special files`, {
      errno: target.stats.isDirectory() ? "EISDIR" : "EINVAL",
    });
  }
  const mode = target.stats ? target.stats.mode & 0o7777 : 0o666;
  const temp = join(dirname(target.path), `.${basename(target.path)}.berth-${Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString("hex")}.tmp`);
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    try {
      await handle.writeFile(data);
      if (target.stats) {
        await handle.chmod(mode);
        if (process.getuid?.() === 0) await chown(temp, target.stats.uid, target.stats.gid);
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, target.path);
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
  return data.length;
}

async function appendTo(path: string, data: Uint8Array): Promise<number> {
  const handle = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOCTTY | constants.O_NONBLOCK, 0o666);
  try {
    await handle.writeFile(data);
    return (await handle.stat()).size;
  } finally {
    await handle.close();
  }
}

async function listDirectory(path: string) {
  const names = (await readdir(path, { encoding: "buffer" })) as Buffer[];
  if (names.length > LIST_MAX_ENTRIES) {
    throw new ApiError(API_LIMIT, `${path} has ${names.length} entries; fs/readDirectory lists at most ${LIST_MAX_ENTRIES}`);
  }
  names.sort(Buffer.compare);
  const prefix = Buffer.from(path.endsWith("/") ? path : `${path}/`);
  const entries = await Promise.all(
    names.map(async (name) => {
      let type: EntryType = "other";
      try {
        type = typeOf(await lstat(Buffer.concat([prefix, name])));
      } catch {
        // removed while listing: still reported, as "other"
      }
      return { ...textField("name", name), type };
    }),
  );
  return { entries };
}

async function metadata(path: string) {
  const stats = await lstat(path);
  const type = typeOf(stats);
  const result: Record<string, unknown> = { type, size: stats.size, mtimeMs: stats.mtimeMs, mode: stats.mode & 0o7777 };
  if (type === "symlink") Object.assign(result, textField("target", (await readlink(path, { encoding: "buffer" })) as Buffer));
  return result;
}

async function remove(path: string, recursive: boolean) {
  if (recursive) {
    await lstat(path); // rm({force:false}) already fails on ENOENT; this makes the errno the same on every Bun
    await rm(path, { recursive: true, force: false });
    return;
  }
  if ((await lstat(path)).isDirectory()) await rmdir(path);
  else await unlink(path);
}

/** Runs at most `limit` of the given jobs at once; the others wait in order. */
function limiter(limit: number) {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async <T>(job: () => Promise<T>): Promise<T> => {
    while (running >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    running += 1;
    try {
      return await job();
    } finally {
      running -= 1;
      waiting.shift()?.();
    }
  };
}

/** The fs/* family; watches are per server and end with their connection. */
export function createFsApi(): ApiFamily {
  const watches = createWatches();
  const readSlot = limiter(READS_AT_ONCE);
  const listSlot = limiter(LISTS_AT_ONCE);
  /** The connection is gone (closed for its backlog, say): nobody would get the result of a queued job. */
  const stillWanted = (conn: Conn, what: string) => {
    if (conn.closed) throw new ApiError(API_LIMIT, `the connection closed before the ${what} began`);
  };
  return {
    methods: {
      "fs/readFile": method(
        params({ path: absPath, offset: optional(int(0)), length: optional(int(0, READ_MAX_BYTES)) }),
        (p, conn) =>
          readSlot(async () => {
            stillWanted(conn, "read");
            return attempt("reading", p.path, () => readRange(p.path, p.offset ?? 0, p.length ?? READ_MAX_BYTES));
          }),
      ),
      "fs/writeFile": method(
        params({ path: absPath, data: base64, append: optional(bool), createParents: optional(bool) }),
        (p) =>
          attempt("writing", p.path, async () => {
            if (p.createParents) await mkdir(dirname(p.path), { recursive: true });
            return { size: p.append ? await appendTo(p.path, p.data) : await writeWhole(p.path, p.data) };
          }),
      ),
      "fs/getMetadata": method(params({ path: absPath }), (p) => attempt("reading metadata of", p.path, () => metadata(p.path))),
      "fs/readDirectory": method(params({ path: absPath }), (p, conn) =>
        listSlot(async () => {
          stillWanted(conn, "listing");
          return attempt("listing", p.path, () => listDirectory(p.path));
        }),
      ),
      "fs/createDirectory": method(params({ path: absPath, recursive: optional(bool) }), (p) =>
        attempt("creating directory", p.path, async () => {
          await mkdir(p.path, { recursive: p.recursive ?? false });
          return {};
        }),
      ),
      "fs/remove": method(params({ path: absPath, recursive: optional(bool) }), (p) =>
        attempt("removing", p.path, async () => {
          await remove(p.path, p.recursive ?? false);
          return {};
        }),
      ),
      "fs/rename": method(params({ from: absPath, to: absPath }), (p) =>
        attempt("renaming", p.from, async () => {
          await rename(p.from, p.to);
          return {};
        }),
      ),
      ...watches.methods,
    },
    shutdown: async () => watches.closeAll(),
  };
}
