/**
 * The synchronous file calls of berth's hot paths (every CLI command, the app-server's start), with
 * node:fs's names, arguments, results and errors (`code`, `errno`, `syscall`, `path`).
 *
 * Why not node:fs itself: in a compiled berth, importing it costs ≈ 0.8 ms — with a compiled empty
 * program at 2.8 ms, a third of the floor — in every process, while berth's own use is a dozen plain
 * syscalls. On Linux these go straight to the C library (src/platform/ffi.ts, one dlopen ≈ 0.3 ms, and
 * most commands load it anyway for flock); anywhere else, and for anything this file does not do
 * itself (recursive removal, options it does not know), node:fs does the work, loaded on first use.
 * test/sys.test.ts runs every function against node:fs on the same files and compares.
 */
import type * as NodeFs from "node:fs";
import { ERRNO_NAMES } from "./errno.ts";
import { fileCalls, STATX_BYTES, type FileCalls } from "./ffi.ts";

let nodeFs: typeof NodeFs | undefined;
/** node:fs, loaded on first use (macOS, old C libraries, the options below that are not done here). */
function node(): typeof NodeFs {
  nodeFs ??= require("node:fs") as typeof NodeFs;
  return nodeFs;
}

let calls: FileCalls | null | undefined;
function libc(): FileCalls | undefined {
  if (calls === undefined) calls = process.env.BERTH_SYS_NODE_FS === "1" ? null : (fileCalls() ?? null);
  return calls ?? undefined;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
const S_IFSOCK = 0o140000;

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const AT_EMPTY_PATH = 0x1000;
const STATX_BASIC_STATS = 0x7ff;
const F_OK = 0;
const PATH_MAX = 4096;
/** One read or write call moves at most this much (keeps every length a safe 32-bit count). */
const IO_CHUNK_BYTES = 1 << 30;
const EINTR = 4;
const ENOENT = 2;
const EEXIST = 17;

/** Linux's open(2) flags: x86-64 and arm64 differ in four of them. */
const ARM64 = process.arch === "arm64";
type OpenConstants = Record<
  "O_RDONLY" | "O_WRONLY" | "O_RDWR" | "O_CREAT" | "O_EXCL" | "O_NOCTTY" | "O_TRUNC" | "O_APPEND" | "O_NONBLOCK" | "O_DIRECTORY" | "O_NOFOLLOW" | "S_IFMT" | "S_IFREG" | "S_IFDIR" | "S_IFLNK",
  number
>;
const O_CLOEXEC = 0o2000000;
const LINUX_CONSTANTS: OpenConstants = {
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  O_NOCTTY: 0o400,
  O_TRUNC: 0o1000,
  O_APPEND: 0o2000,
  O_NONBLOCK: 0o4000,
  O_DIRECTORY: ARM64 ? 0o40000 : 0o200000,
  O_NOFOLLOW: ARM64 ? 0o100000 : 0o400000,
  S_IFMT,
  S_IFREG,
  S_IFDIR,
  S_IFLNK,
};

/** The open(2) flags by name (node:fs's `constants` where node:fs does the work). */
export const constants: OpenConstants = libc() ? LINUX_CONSTANTS : node().constants;


export type SysError = Error & { code: string; errno: number; syscall: string; path?: string; dest?: string };

/** Pure: node:fs's error for errno `errno` of `syscall` on `path` (e.g. "ENOENT: no such file or directory, open '/x'"). */
export function sysError(errno: number, syscall: string, path?: string, dest?: string): SysError {
  const [code, text] = ERRNO_NAMES[errno] ?? [`E${errno}`, `unknown error ${errno}`];
  const where = path === undefined ? "" : dest === undefined ? ` '${path}'` : ` '${path}' -> '${dest}'`;
  const error = new Error(`${code}: ${text}, ${syscall}${where}`) as SysError;
  error.code = code;
  error.errno = -errno;
  error.syscall = syscall;
  if (path !== undefined) error.path = path;
  if (dest !== undefined) error.dest = dest;
  return error;
}

// Buffer is not used here: its first use costs a compiled berth ≈ 0.15 ms; TextEncoder/TextDecoder ≈ 0.01 ms.
const encoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is text, kept as node:fs and Buffer keep it (TextDecoder drops it by default:
// a BOM-prefixed environ entry then read as BERTH_HOME=..., a BOM-prefixed state file as valid JSON).
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** UTF-8 bytes of a string, and back (what the hot paths use instead of Buffer). */
export function utf8Bytes(text: string): Uint8Array {
  return encoder.encode(text);
}
export function utf8Text(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}

/** Pure: bytes as ISO-8859-1 text (node:fs's "latin1": one byte, one code point; TextDecoder's "latin1" is windows-1252). */
export function latin1(bytes: Uint8Array): string {
  let text = "";
  // apply, not a spread: a typed array spread goes through the iterator, 20-50 µs for a short /proc file.
  for (let i = 0; i < bytes.byteLength; i += 8192) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192) as unknown as number[]);
  return text;
}

/** A path as the C library wants it; a NUL inside would silently cut it short, so it is refused as node:fs does. */
function cPath(path: string): Uint8Array {
  if (typeof path !== "string") throw new TypeError(`The "path" argument must be of type string. Received ${typeof path}`);
  if (path.includes("\0")) throw Object.assign(new TypeError(`The argument 'path' must be a string without null bytes. Received ${JSON.stringify(path)}`), { code: "ERR_INVALID_ARG_VALUE" });
  return encoder.encode(`${path}\0`);
}

let pathScratch: Uint8Array | undefined;

/**
 * cPath into one reused buffer, for the calls that take a single path and keep nothing of it (the /proc
 * scans make hundreds): no allocation per call. The result is overwritten by the next such call.
 */
function cPathScratch(path: string): Uint8Array {
  if (typeof path !== "string" || path.includes("\0") || path.length * 3 >= PATH_MAX) return cPath(path);
  pathScratch ??= new Uint8Array(PATH_MAX);
  const { written } = encoder.encodeInto(path, pathScratch);
  pathScratch[written] = 0;
  return pathScratch;
}

/** Runs a call that returns -1 on failure, again after EINTR; throws node:fs's error otherwise. */
function check(c: FileCalls, result: number, syscall: string, path?: string, dest?: string): number {
  if (result >= 0) return result;
  throw sysError(c.errno(), syscall, path, dest);
}

function retrying(c: FileCalls, call: () => number, syscall: string, path?: string, dest?: string): number {
  for (;;) {
    const result = call();
    if (result >= 0) return result;
    const errno = c.errno();
    if (errno !== EINTR) throw sysError(errno, syscall, path, dest);
  }
}

/** What statSync, lstatSync and fstatSync return: node:fs's Stats fields and type tests. */
export class FileStat {
  constructor(
    readonly dev: number,
    readonly ino: number,
    readonly mode: number,
    readonly nlink: number,
    readonly uid: number,
    readonly gid: number,
    readonly rdev: number,
    readonly size: number,
    readonly blksize: number,
    readonly blocks: number,
    readonly atimeMs: number,
    readonly mtimeMs: number,
    readonly ctimeMs: number,
    readonly birthtimeMs: number,
  ) {}
  get mtime(): Date {
    return new Date(this.mtimeMs);
  }
  isFile(): boolean {
    return (this.mode & S_IFMT) === S_IFREG;
  }
  isDirectory(): boolean {
    return (this.mode & S_IFMT) === S_IFDIR;
  }
  isSymbolicLink(): boolean {
    return (this.mode & S_IFMT) === S_IFLNK;
  }
  isCharacterDevice(): boolean {
    return (this.mode & S_IFMT) === S_IFCHR;
  }
  isBlockDevice(): boolean {
    return (this.mode & S_IFMT) === S_IFBLK;
  }
  isFIFO(): boolean {
    return (this.mode & S_IFMT) === S_IFIFO;
  }
  isSocket(): boolean {
    return (this.mode & S_IFMT) === S_IFSOCK;
  }
}

/** glibc's makedev(): the device number node:fs reports. */
function makedev(major: number, minor: number): number {
  return (major & 0xfff) * 256 + (minor & 0xff) + ((minor & 0xffffff00) >>> 0) * 4096 + ((major & 0xfffff000) >>> 0) * 2 ** 32;
}

/** Pure: a struct statx (STATX_BYTES) as a FileStat. */
export function statFromStatx(bytes: Uint8Array): FileStat {
  // Little-endian (every Linux berth targets): 32-bit words, 64-bit fields as high * 2^32 + low.
  const [w, i] = bytes === statxScratch && statxWords ? statxWords : [new Uint32Array(bytes.buffer, bytes.byteOffset, STATX_BYTES / 4), new Int32Array(bytes.buffer, bytes.byteOffset, STATX_BYTES / 4)];
  const u64 = (offset: number) => (w[offset / 4 + 1] as number) * 2 ** 32 + (w[offset / 4] as number);
  const timeMs = (offset: number) => ((i[offset / 4 + 1] as number) * 2 ** 32 + (w[offset / 4] as number)) * 1000 + (w[offset / 4 + 2] as number) / 1e6;
  return new FileStat(
    makedev(w[34] as number, w[35] as number),
    u64(32),
    (w[7] as number) & 0xffff,
    w[4] as number,
    w[5] as number,
    w[6] as number,
    makedev(w[32] as number, w[33] as number),
    u64(40),
    w[1] as number,
    u64(48),
    timeMs(64),
    timeMs(112),
    timeMs(96),
    timeMs(80),
  );
}

let statxScratch: Uint8Array | undefined;
/** statxScratch seen as unsigned and signed 32-bit words (made once: views cost microseconds each in cold code). */
let statxWords: [Uint32Array, Int32Array] | undefined;

/**
 * Set once statx(2) itself is refused rather than failing for the path: a seccomp filter older than statx
 * (Docker < 18.04, libseccomp < 2.3.3, some CI sandboxes) answers EPERM for every path, where node:fs
 * (Bun, like libuv) falls back to stat(2). From then on node:fs does the stat calls here too.
 */
let statxRefused = false;
const STATX_REFUSED_ERRNOS = new Set([1 /* EPERM */, 22 /* EINVAL */, 38 /* ENOSYS */, 95 /* EOPNOTSUPP */]);

/** statx(2) as a FileStat, the errno it failed with, or undefined when statx is refused (node:fs's turn). */
function statx(c: FileCalls, dirfd: number, path: string, flags: number): FileStat | number | undefined {
  if (statxRefused) return undefined;
  if (!statxScratch) {
    statxScratch = new Uint8Array(STATX_BYTES);
    statxWords = [new Uint32Array(statxScratch.buffer), new Int32Array(statxScratch.buffer)];
  }
  const buffer = statxScratch;
  const encoded = cPathScratch(path);
  for (;;) {
    const result = c.statx(dirfd, encoded, flags, STATX_BASIC_STATS, buffer);
    if (result === 0) return statFromStatx(buffer);
    const errno = result < 0 ? c.errno() : 0;
    if (errno === EINTR) continue;
    // Not a statx answer (a positive result), or statx refused as a whole: node:fs asks stat(2) instead.
    if (result > 0 || STATX_REFUSED_ERRNOS.has(errno)) {
      statxRefused = true;
      return undefined;
    }
    return errno;
  }
}

type StatOptions = { throwIfNoEntry?: boolean };

function statPath(path: string, options: StatOptions | undefined, flags: number, syscall: "stat" | "lstat"): FileStat | undefined {
  const c = libc();
  const result = c ? statx(c, AT_FDCWD, path, flags) : undefined;
  if (result === undefined) return (syscall === "stat" ? node().statSync : node().lstatSync)(path, options as never) as unknown as FileStat | undefined;
  if (typeof result !== "number") return result;
  if (result === ENOENT && options?.throwIfNoEntry === false) return undefined;
  throw sysError(result, syscall, path);
}

export function statSync(path: string): FileStat;
export function statSync(path: string, options: StatOptions): FileStat | undefined;
export function statSync(path: string, options?: StatOptions): FileStat | undefined {
  return statPath(path, options, 0, "stat");
}

export function lstatSync(path: string): FileStat;
export function lstatSync(path: string, options: StatOptions): FileStat | undefined;
export function lstatSync(path: string, options?: StatOptions): FileStat | undefined {
  return statPath(path, options, AT_SYMLINK_NOFOLLOW, "lstat");
}

export function fstatSync(fd: number, options?: StatOptions): FileStat {
  const c = libc();
  const result = c ? statx(c, fd, "", AT_EMPTY_PATH) : undefined;
  if (result === undefined) return node().fstatSync(fd, options as never) as unknown as FileStat;
  if (typeof result !== "number") return result;
  throw sysError(result, "fstat");
}

export function existsSync(path: string): boolean {
  const c = libc();
  if (!c) return node().existsSync(path);
  if (typeof path !== "string" || path.includes("\0")) return false;
  return c.access(cPath(path), F_OK) === 0;
}

const OPEN_FLAGS: Record<string, number> = {
  r: LINUX_CONSTANTS.O_RDONLY,
  "r+": LINUX_CONSTANTS.O_RDWR,
  w: LINUX_CONSTANTS.O_WRONLY | LINUX_CONSTANTS.O_CREAT | LINUX_CONSTANTS.O_TRUNC,
  wx: LINUX_CONSTANTS.O_WRONLY | LINUX_CONSTANTS.O_CREAT | LINUX_CONSTANTS.O_TRUNC | LINUX_CONSTANTS.O_EXCL,
  "w+": LINUX_CONSTANTS.O_RDWR | LINUX_CONSTANTS.O_CREAT | LINUX_CONSTANTS.O_TRUNC,
  a: LINUX_CONSTANTS.O_WRONLY | LINUX_CONSTANTS.O_CREAT | LINUX_CONSTANTS.O_APPEND,
  ax: LINUX_CONSTANTS.O_WRONLY | LINUX_CONSTANTS.O_CREAT | LINUX_CONSTANTS.O_APPEND | LINUX_CONSTANTS.O_EXCL,
  "a+": LINUX_CONSTANTS.O_RDWR | LINUX_CONSTANTS.O_CREAT | LINUX_CONSTANTS.O_APPEND,
};

/** open(2); like node:fs, every descriptor is close-on-exec (a launched server must not inherit a lock). */
export function openSync(path: string, flags: string | number = "r", mode = 0o666): number {
  const c = libc();
  const bits = typeof flags === "number" ? flags : OPEN_FLAGS[flags];
  if (!c || bits === undefined) return node().openSync(path, flags, mode);
  const encoded = cPath(path);
  return retrying(c, () => c.open(encoded, bits | O_CLOEXEC, mode), "open", path);
}

export function closeSync(fd: number): void {
  const c = libc();
  if (!c) return node().closeSync(fd);
  // Never again after EINTR: Linux has closed the descriptor already, and it may be someone else's by now.
  // Nor an error (libuv's and Bun's close say success): a caller would close the number again, or fail a release.
  if (c.close(fd) === 0) return;
  const errno = c.errno();
  if (errno !== EINTR && errno !== 115 /* EINPROGRESS */) throw sysError(errno, "close");
}

/** read(2) into buffer[offset, offset + length), or pread(2) at `position` when it is a number. */
export function readSync(fd: number, buffer: Uint8Array, offset = 0, length = buffer.byteLength - offset, position: number | null = null): number {
  const c = libc();
  if (!c) return node().readSync(fd, buffer, offset, length, position);
  if (offset < 0 || length < 0 || offset + length > buffer.byteLength) throw new RangeError(`read of ${length} bytes at ${offset} does not fit a buffer of ${buffer.byteLength}`);
  if (length === 0) return 0;
  const target = buffer.subarray(offset, offset + Math.min(length, IO_CHUNK_BYTES));
  return retrying(c, () => (typeof position === "number" && position >= 0 ? c.pread(fd, target, target.byteLength, position) : c.read(fd, target, target.byteLength)), "read");
}

/** write(2) of a string, or of data[offset, offset + length); returns how many bytes went out. */
export function writeSync(fd: number, data: string | Uint8Array, offset = 0, length?: number): number {
  const c = libc();
  if (!c) return typeof data === "string" ? node().writeSync(fd, data) : node().writeSync(fd, data, offset, length);
  const bytes = typeof data === "string" ? encoder.encode(data) : data.subarray(offset, length === undefined ? undefined : offset + length);
  if (bytes.byteLength === 0) return 0;
  const chunk = bytes.subarray(0, IO_CHUNK_BYTES);
  return retrying(c, () => c.write(fd, chunk, chunk.byteLength), "write");
}

export function fsyncSync(fd: number): void {
  const c = libc();
  if (!c) return node().fsyncSync(fd);
  retrying(c, () => c.fsync(fd), "fsync");
}

export function readlinkSync(path: string): string {
  const c = libc();
  if (!c) return node().readlinkSync(path, "utf8");
  const buffer = new Uint8Array(PATH_MAX);
  const length = check(c, c.readlink(cPath(path), buffer, PATH_MAX), "readlink", path);
  return utf8.decode(buffer.subarray(0, length));
}

export function realpathSync(path: string): string {
  const c = libc();
  if (!c) return node().realpathSync(path);
  const buffer = new Uint8Array(PATH_MAX);
  // node:fs names the lstat of its own walk as the failing call; so do we.
  if (!c.realpath(cPath(path), buffer)) throw sysError(c.errno(), "lstat", path);
  return utf8.decode(buffer.subarray(0, buffer.indexOf(0)));
}

export function renameSync(from: string, to: string): void {
  const c = libc();
  if (!c) return node().renameSync(from, to);
  check(c, c.rename(cPath(from), cPath(to)), "rename", from, to);
}

/** Removes a file (`force`: a missing one is fine). A folder, or `recursive`, is node:fs's work. */
export function rmSync(path: string, options: { force?: boolean; recursive?: boolean } = {}): void {
  const c = libc();
  if (!c || options.recursive) return node().rmSync(path, options);
  if (c.unlink(cPath(path)) === 0) return;
  const errno = c.errno();
  if (errno === ENOENT && options.force) return;
  // EISDIR (Linux says so for a folder) and the rest: node:fs's answer, whatever it is.
  if (errno === ENOENT) throw sysError(errno, "lstat", path);
  return node().rmSync(path, options);
}

export function chmodSync(path: string, mode: number): void {
  const c = libc();
  if (!c) return node().chmodSync(path, mode);
  check(c, c.chmod(cPath(path), mode), "chmod", path);
}

export function unlinkSync(path: string): void {
  const c = libc();
  if (!c) return node().unlinkSync(path);
  check(c, c.unlink(cPath(path)), "unlink", path);
}

/** mkdir(2); `recursive` creates the missing parents too and accepts a folder that is there. */
export function mkdirSync(path: string, options: { mode?: number; recursive?: boolean } = {}): void {
  const c = libc();
  if (!c) {
    node().mkdirSync(path, options);
    return;
  }
  const mode = options.mode ?? 0o777;
  if (c.mkdir(cPath(path), mode) === 0) return;
  const errno = c.errno();
  if (options.recursive && errno === EEXIST && statSync(path, { throwIfNoEntry: false })?.isDirectory()) return;
  if (!options.recursive || errno !== ENOENT) throw sysError(errno, "mkdir", path);
  const parent = path.replace(/\/+[^/]*\/*$/, "") || "/";
  if (parent === path) throw sysError(errno, "mkdir", path);
  mkdirSync(parent, options);
  // Again, accepting a folder there as above: another process may have made it meanwhile, and "x/." exists once "x" does.
  if (c.mkdir(cPath(path), mode) === 0) return;
  const again = c.errno();
  if (again === EEXIST && statSync(path, { throwIfNoEntry: false })?.isDirectory()) return;
  throw sysError(again, "mkdir", path);
}

/** The names in a folder (no options: anything else is node:fs's work). */
export function readdirSync(path: string): string[] {
  const c = libc();
  if (!c) return node().readdirSync(path);
  const names = c.readdir(cPath(path));
  if (typeof names === "number") throw sysError(names, "scandir", path);
  return names;
}

const READ_SCRATCH_BYTES = 16 * 1024;
/** Reused by readFileSync (synchronous, never re-entered): the /proc scans read hundreds of small files. */
let readScratch: Uint8Array | undefined;

/**
 * A whole file as text; /proc files (size 0 until read) included. Calls the C library directly, not
 * through openSync/readSync: `status` reads every process's cmdline, and each wrapper layer costs
 * microseconds in cold code.
 */
export function readFileSync(path: string, encoding: "utf8" | "latin1"): string {
  const c = libc();
  if (!c) return node().readFileSync(path, encoding);
  const encoded = cPathScratch(path);
  let fd = c.open(encoded, LINUX_CONSTANTS.O_RDONLY | O_CLOEXEC, 0);
  while (fd < 0) {
    const errno = c.errno();
    if (errno !== EINTR) throw sysError(errno, "open", path);
    fd = c.open(encoded, LINUX_CONSTANTS.O_RDONLY | O_CLOEXEC, 0);
  }
  try {
    readScratch ??= new Uint8Array(READ_SCRATCH_BYTES);
    let bytes = readScratch;
    let total = 0;
    for (;;) {
      if (total === bytes.byteLength) {
        const bigger = new Uint8Array(bytes.byteLength * 2);
        bigger.set(bytes);
        bytes = bigger;
      }
      const count = c.read(fd, total === 0 ? bytes : bytes.subarray(total), bytes.byteLength - total);
      if (count === 0) break;
      if (count < 0) {
        const errno = c.errno();
        if (errno !== EINTR) throw sysError(errno, "read", path);
        continue;
      }
      total += count;
    }
    const view = bytes.subarray(0, total);
    return encoding === "latin1" ? latin1(view) : utf8.decode(view);
  } finally {
    c.close(fd);
  }
}
