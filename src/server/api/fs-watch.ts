/**
 * fs/watch and fs/unwatch: node:fs watch (inotify on Linux, recursive there
 * and on macOS) with changes coalesced per path over 50 ms into one
 * fs/changed notification. A watch belongs to the connection that made it and
 * ends with it.
 */
import { lstatSync, statSync, watch, type FSWatcher } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { absPath, bool, nonEmptyStr, optional, params } from "./params.ts";
import { fsError, textField } from "./fs-errors.ts";
import { API_LIMIT, API_NOT_FOUND, ApiError, method, type Conn, type MethodTable } from "./types.ts";

/** Changes are gathered this long before one fs/changed goes out (spec). */
export const COALESCE_MS = 50;
/** At most this many watches per connection (each may hold many inotify watches when recursive). */
export const WATCHES_PER_CONNECTION_MAX = 256;
/**
 * A recursive watch takes one inotify watch per folder, all made at once
 * while the server waits (`/` here: 40 000 folders, 2.4 s frozen) and counted
 * against the user's max_user_watches, shared with their editors: at most this
 * many folders per recursive watch, and in all of them together (-32001 past it).
 */
export const RECURSIVE_WATCH_MAX_FOLDERS = 10_000;
export const RECURSIVE_WATCH_TOTAL_MAX_FOLDERS = 50_000;
/** At most this many distinct paths in one fs/changed; the rest are dropped and `overflow: true` says so. */
export const CHANGES_PER_BATCH_MAX = 10_000;
/** While the client has more than this unread, changes keep gathering (bounded by the batch cap) instead of being sent. */
export const WATCH_BACKLOG_MAX_BYTES = 1024 * 1024;
/**
 * Gathered changes all watches of one connection may hold together (their
 * paths, counted twice: the key and the bytes); past it new paths are dropped
 * and `overflow: true` says so. Per watch alone, 32 watches of one deep
 * folder on a client that reads nothing held 2.8 GiB.
 */
export const CHANGES_PER_CONNECTION_MAX_BYTES = 16 * 1024 * 1024;
/** What one gathered change costs beyond its path (map entry, object, Buffer): an estimate, for the cap above. */
const CHANGE_OVERHEAD_BYTES = 64;

export type ChangeKind = "created" | "modified" | "deleted";

/** How two changes to one path inside one batch combine (a pure table). */
export function mergeKind(previous: ChangeKind | undefined, next: ChangeKind): ChangeKind {
  if (previous === "created" && next === "modified") return "created";
  if (previous === "deleted" && next === "created") return "modified"; // replaced (atomic save)
  return next;
}

/** One batch of changes keyed by path bytes, in first-seen order. */
export class ChangeBatch {
  private readonly changes = new Map<string, { path: Buffer; kind: ChangeKind }>();
  overflow = false;
  /** What the gathered changes cost, by CHANGE_OVERHEAD_BYTES + twice each path's length. */
  bytes = 0;

  /** Gathers a change; a new path costing more than `room` (or past the count cap) is dropped as overflow. Returns the cost added. */
  add(path: Buffer, kind: ChangeKind, room = Number.POSITIVE_INFINITY): number {
    const key = path.toString("latin1");
    const previous = this.changes.get(key);
    const cost = previous ? 0 : CHANGE_OVERHEAD_BYTES + 2 * path.length;
    if (!previous && (this.changes.size >= CHANGES_PER_BATCH_MAX || cost > room)) {
      this.overflow = true;
      return 0;
    }
    this.changes.set(key, { path, kind: mergeKind(previous?.kind, kind) });
    this.bytes += cost;
    return cost;
  }

  get size(): number {
    return this.changes.size;
  }

  /** The notification's `changes`, paths given back by the non-UTF-8 rule. */
  toJSON(): Array<Record<string, string>> {
    return [...this.changes.values()].map(({ path, kind }) => ({ ...textField("path", path), kind }));
  }
}

type Watch = { id: string; conn: Conn; watcher: FSWatcher; batch: ChangeBatch; timer?: ReturnType<typeof setTimeout>; stopCloseListener?: () => void; folders: number };

/** Folders in the tree at `root` (itself included), without following symlinks; stops counting past `limit`. */
export async function countFolders(root: string, limit: number): Promise<number> {
  let count = 0;
  const queue = [root];
  while (queue.length > 0 && count <= limit) {
    const folder = queue.pop() as string;
    count += 1;
    try {
      for (const entry of await readdir(folder, { withFileTypes: true })) if (entry.isDirectory()) queue.push(join(folder, entry.name));
    } catch {
      // unreadable or gone: counted, not entered
    }
  }
  return count;
}

function existsNoFollow(path: Buffer): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

export function createWatches() {
  const watches = new Map<string, Watch>();
  const perConn = new Map<number, number>();
  /** What the watches of each connection have gathered and not sent (CHANGES_PER_CONNECTION_MAX_BYTES); gone with the connection. */
  const gathered = new WeakMap<Conn, { bytes: number }>();
  const accountOf = (conn: Conn) => {
    let account = gathered.get(conn);
    if (!account) gathered.set(conn, (account = { bytes: 0 }));
    return account;
  };
  /** A batch leaves its connection's account (sent, or its watch closed). */
  const settle = (entry: Watch) => {
    accountOf(entry.conn).bytes -= entry.batch.bytes;
  };
  let nextId = 1;
  /** Folders covered by the recursive watches open now. */
  let recursiveFolders = 0;

  const close = (entry: Watch) => {
    if (!watches.delete(entry.id)) return;
    settle(entry);
    entry.batch = new ChangeBatch();
    recursiveFolders -= entry.folders;
    clearTimeout(entry.timer);
    const left = (perConn.get(entry.conn.id) ?? 1) - 1;
    if (left > 0) perConn.set(entry.conn.id, left);
    else perConn.delete(entry.conn.id);
    entry.stopCloseListener?.();
    try {
      entry.watcher.close();
    } catch {
      // already closed
    }
  };

  const flush = (entry: Watch) => {
    entry.timer = undefined;
    if (entry.batch.size === 0 || !watches.has(entry.id)) return;
    if (entry.conn.backlog() > WATCH_BACKLOG_MAX_BYTES) {
      entry.timer = setTimeout(() => flush(entry), COALESCE_MS);
      return;
    }
    const batch = entry.batch;
    settle(entry);
    entry.batch = new ChangeBatch();
    entry.conn.notify("fs/changed", { watchId: entry.id, changes: batch.toJSON(), ...(batch.overflow ? { overflow: true } : {}) });
  };

  /** Refuses a recursive watch over too many folders before any inotify watch is made; reserves and returns its count. */
  const recursiveBudget = async (path: string): Promise<number> => {
    const folders = await countFolders(path, RECURSIVE_WATCH_MAX_FOLDERS);
    if (folders > RECURSIVE_WATCH_MAX_FOLDERS) {
      throw new ApiError(API_LIMIT, `${path} holds more than ${RECURSIVE_WATCH_MAX_FOLDERS} folders; watch a smaller folder recursively`);
    }
    if (recursiveFolders + folders > RECURSIVE_WATCH_TOTAL_MAX_FOLDERS) {
      throw new ApiError(API_LIMIT, `recursive watches already cover ${recursiveFolders} folders (limit ${RECURSIVE_WATCH_TOTAL_MAX_FOLDERS}); unwatch some first`);
    }
    recursiveFolders += folders; // reserved now, so concurrent watches cannot pass the total; close() gives it back
    return folders;
  };

  const start = (path: string, recursive: boolean, conn: Conn, folders = 0): string => {
    if ((perConn.get(conn.id) ?? 0) >= WATCHES_PER_CONNECTION_MAX) {
      throw new ApiError(API_LIMIT, `this connection already has ${WATCHES_PER_CONNECTION_MAX} watches; unwatch some first`);
    }
    let isDirectory: boolean;
    try {
      isDirectory = statSync(path).isDirectory();
    } catch (error) {
      throw fsError(error, "watching", path);
    }
    const root = Buffer.from(path.endsWith("/") && path.length > 1 ? path.slice(0, -1) : path);
    const id = `w${nextId++}`;
    let watcher: FSWatcher;
    try {
      watcher = watch(path, { recursive, encoding: "buffer" }, (event, name) => {
        const entry = watches.get(id);
        if (!entry) return;
        // A file watch reports its own basename; a folder watch a path relative to it.
        const full = !isDirectory || !name ? root : Buffer.concat([root, Buffer.from(root.length === 1 ? "" : "/"), name]);
        const kind: ChangeKind = event === "change" ? "modified" : existsNoFollow(full) ? "created" : "deleted";
        const account = accountOf(conn);
        account.bytes += entry.batch.add(full, kind, CHANGES_PER_CONNECTION_MAX_BYTES - account.bytes);
        entry.timer ??= setTimeout(() => flush(entry), COALESCE_MS);
      });
    } catch (error) {
      throw fsError(error, "watching", path);
    }
    const entry: Watch = { id, conn, watcher, batch: new ChangeBatch(), folders };
    // The watched folder going away (or any watcher failure) ends the watch; it never reaches the process.
    watcher.on("error", () => close(entry));
    watches.set(id, entry);
    perConn.set(conn.id, (perConn.get(conn.id) ?? 0) + 1);
    entry.stopCloseListener = conn.onClose(() => close(entry));
    return id;
  };

  const methods: MethodTable = {
    "fs/watch": method(params({ path: absPath, recursive: optional(bool) }), async (p, conn) => {
      const folders = p.recursive ? await recursiveBudget(p.path) : 0;
      try {
        return { watchId: start(p.path, p.recursive ?? false, conn, folders) };
      } catch (error) {
        recursiveFolders -= folders;
        throw error;
      }
    }),
    "fs/unwatch": method(params({ watchId: nonEmptyStr }), (p, conn) => {
      const entry = watches.get(p.watchId);
      if (!entry || entry.conn.id !== conn.id) throw new ApiError(API_NOT_FOUND, `no watch ${JSON.stringify(p.watchId)} on this connection`);
      close(entry);
      return {};
    }),
  };

  return {
    methods,
    /** Ends every watch (server shutdown). */
    closeAll(): void {
      for (const entry of [...watches.values()]) close(entry);
    },
    /** Watches open now (tests and status). */
    count: () => watches.size,
  };
}
