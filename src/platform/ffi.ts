/**
 * Every foreign call berth makes lives here: flock(2) for locks that die with
 * their holder, on macOS proc_pidinfo(2) for a process's kernel start time,
 * the peer credentials of a Unix socket (who really listens on it), and on
 * Linux the send buffers of Unix sockets that carry bulk data.
 */
import { dlopen, FFIType, ptr, read, type Pointer } from "bun:ffi";
import { readdirSync } from "node:fs";

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EWOULDBLOCK_LINUX = 11;
const EWOULDBLOCK_DARWIN = 35;
const EINTR = 4;

const PROC_PIDTBSDINFO = 3;
const PROC_BSDINFO_SIZE = 136;
const PBI_STATUS_OFFSET = 4;
const PBI_PGID_OFFSET = 100;
const PBI_START_TVSEC_OFFSET = 120;
const PBI_START_TVUSEC_OFFSET = 128;
const SZOMB = 5;

function libcCandidates(): string[] {
  if (process.platform === "darwin") return ["/usr/lib/libSystem.B.dylib", "libSystem.B.dylib"];
  const arch = process.arch === "arm64" ? "aarch64" : "x86_64";
  return ["libc.so.6", `libc.musl-${arch}.so.1`, `/lib/ld-musl-${arch}.so.1`, "libc.so"];
}

type LibcSymbols = Record<string, (...args: unknown[]) => unknown>;

/**
 * The C library's `symbols` under the first of libcCandidates() that loads, or undefined; `failures`
 * collects why each name did not. Each block below keeps its own handle (and loads only when first used).
 */
function dlopenLibc(symbols: Parameters<typeof dlopen>[1], failures: string[] = []): LibcSymbols | undefined {
  for (const name of libcCandidates()) {
    try {
      return dlopen(name, symbols).symbols as unknown as LibcSymbols;
    } catch (error) {
      failures.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return undefined;
}

const libcSymbols = {
  flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  execve: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  sigprocmask: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  connect: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
  getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
} as const;

type Libc = {
  flock(fd: number, op: number): number;
  execve(path: Pointer, argv: Pointer, envp: Pointer): number;
  sigprocmask(how: number, set: Pointer, old: null): number;
  socket(domain: number, type: number, protocol: number): number;
  connect(fd: number, address: Pointer, length: number): number;
  getsockopt(fd: number, level: number, name: number, value: Pointer, length: Pointer): number;
  close(fd: number): number;
  errno(): number;
  procPidInfo?(pid: number, buffer: Uint8Array): number;
};

let libc: Libc | undefined;

function openLibc(): Libc {
  if (libc) return libc;
  const errnoSymbol = process.platform === "darwin" ? "__error" : "__errno_location";
  const failures: string[] = [];
  const symbols = dlopenLibc(
    {
      ...libcSymbols,
      [errnoSymbol]: { args: [], returns: FFIType.ptr },
      ...(process.platform === "darwin"
        ? { proc_pidinfo: { args: [FFIType.i32, FFIType.i32, FFIType.u64, FFIType.ptr, FFIType.i32], returns: FFIType.i32 } }
        : {}),
    },
    failures,
  );
  if (!symbols) throw new Error(`cannot load the C library for flock (${failures.join("; ")})`);
  libc = {
    flock: (fd, op) => symbols.flock!(fd, op) as number,
    execve: (path, argv, envp) => symbols.execve!(path, argv, envp) as number,
    sigprocmask: (how, set, old) => symbols.sigprocmask!(how, set, old) as number,
    socket: (domain, type, protocol) => symbols.socket!(domain, type, protocol) as number,
    connect: (fd, address, length) => symbols.connect!(fd, address, length) as number,
    getsockopt: (fd, level, name, value, length) => symbols.getsockopt!(fd, level, name, value, length) as number,
    close: (fd) => symbols.close!(fd) as number,
    errno: () => read.i32(symbols[errnoSymbol]!() as Pointer, 0),
    procPidInfo: symbols.proc_pidinfo
      ? (pid, buffer) => symbols.proc_pidinfo!(pid, PROC_PIDTBSDINFO, 0, buffer, buffer.byteLength) as number
      : undefined,
  };
  return libc;
}

export type TryLockResult = "acquired" | "busy";

/** Non-blocking exclusive flock. Throws on errors other than "held by someone else". */
export function flockTryExclusive(fd: number): TryLockResult {
  const c = openLibc();
  for (;;) {
    if (c.flock(fd, LOCK_EX | LOCK_NB) === 0) return "acquired";
    const errno = c.errno();
    if (errno === EINTR) continue;
    if (errno === EWOULDBLOCK_LINUX || errno === EWOULDBLOCK_DARWIN) return "busy";
    throw new Error(`flock failed with errno ${errno}`);
  }
}

export function flockUnlock(fd: number): void {
  openLibc().flock(fd, LOCK_UN);
}

export type DarwinProcessInfo = { startTime: string; zombie: boolean; pgid: number };

/** macOS only: the kernel's record of a process, or undefined when it does not exist. */
export function darwinProcessInfo(pid: number): DarwinProcessInfo | undefined {
  const c = openLibc();
  if (!c.procPidInfo) throw new Error("proc_pidinfo is only available on macOS");
  const buffer = new Uint8Array(PROC_BSDINFO_SIZE);
  if (c.procPidInfo(pid, buffer) !== PROC_BSDINFO_SIZE) return undefined;
  const view = new DataView(buffer.buffer);
  const seconds = view.getBigUint64(PBI_START_TVSEC_OFFSET, true);
  const micros = view.getBigUint64(PBI_START_TVUSEC_OFFSET, true);
  return {
    startTime: `${seconds}.${micros.toString().padStart(6, "0")}`,
    zombie: view.getUint32(PBI_STATUS_OFFSET, true) === SZOMB,
    pgid: view.getUint32(PBI_PGID_OFFSET, true),
  };
}

const SIG_SETMASK = process.platform === "darwin" ? 3 : 2;

function cString(value: string): Buffer {
  return Buffer.from(`${value}\0`);
}

function pointerArray(buffers: Buffer[]): BigUint64Array {
  const array = new BigUint64Array(buffers.length + 1);
  buffers.forEach((buffer, index) => (array[index] = BigInt(ptr(buffer))));
  return array;
}

/**
 * Replaces this process's image with another program, keeping its pid (and so
 * its recorded identity). Returns only on failure, by throwing.
 */
export function execReplace(path: string, argv: string[], env: Record<string, string | undefined>): never {
  const c = openLibc();
  const pathBuffer = cString(path);
  const argBuffers = argv.map(cString);
  const envBuffers = Object.entries(env)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => cString(`${key}=${value}`));
  const argvArray = pointerArray(argBuffers);
  const envArray = pointerArray(envBuffers);
  // A blocked signal stays blocked across exec: start the new image with none blocked.
  const emptySet = new Uint8Array(128);
  c.sigprocmask(SIG_SETMASK, ptr(emptySet), null);
  c.execve(ptr(pathBuffer), ptr(argvArray), ptr(envArray));
  throw new Error(`execve ${path} failed with errno ${c.errno()}`);
}

const AF_UNIX = 1;
const SOCK_STREAM_LINUX = 1;
const SOCK_STREAM_DARWIN = 1;
const SOL_SOCKET_LINUX = 1;
const SO_PEERCRED_LINUX = 17;
const UCRED_SIZE_LINUX = 12;
const SOL_LOCAL_DARWIN = 0;
const LOCAL_PEERCRED_DARWIN = 1;
const LOCAL_PEERPID_DARWIN = 2;
const SUN_PATH_BYTES_LINUX = 108;
const SUN_PATH_BYTES_DARWIN = 104;
const XUCRED_SIZE_DARWIN = 76;
const XUCRED_UID_OFFSET_DARWIN = 4;

export type PeerCredentials = { pid: number; uid: number };

function unixAddress(path: string): Uint8Array {
  const bytes = Buffer.from(path);
  const darwin = process.platform === "darwin";
  const capacity = darwin ? SUN_PATH_BYTES_DARWIN : SUN_PATH_BYTES_LINUX;
  if (bytes.byteLength >= capacity) throw new Error(`socket path ${path} is longer than ${capacity - 1} bytes`);
  const address = new Uint8Array(2 + capacity);
  if (darwin) {
    address[0] = 2 + bytes.byteLength + 1; // sun_len
    address[1] = AF_UNIX;
  } else {
    new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  }
  address.set(bytes, 2);
  return address;
}

/**
 * Connects to the Unix socket at `path` and asks the kernel who created the
 * listening end (SO_PEERCRED on Linux; LOCAL_PEERPID + LOCAL_PEERCRED on
 * macOS). Undefined when nothing accepts the connection. The kernel's answer,
 * unlike anything said over the socket, cannot be forged by the peer.
 */
export function unixSocketPeer(path: string): PeerCredentials | undefined {
  const c = openLibc();
  const darwin = process.platform === "darwin";
  const fd = c.socket(AF_UNIX, darwin ? SOCK_STREAM_DARWIN : SOCK_STREAM_LINUX, 0);
  if (fd < 0) throw new Error(`socket(AF_UNIX) failed with errno ${c.errno()}`);
  try {
    const address = unixAddress(path);
    if (c.connect(fd, ptr(address), address.byteLength) !== 0) return undefined;
    const length = new Uint32Array(1);
    if (!darwin) {
      const cred = new Uint8Array(UCRED_SIZE_LINUX);
      length[0] = UCRED_SIZE_LINUX;
      if (c.getsockopt(fd, SOL_SOCKET_LINUX, SO_PEERCRED_LINUX, ptr(cred), ptr(length)) !== 0) {
        throw new Error(`getsockopt(SO_PEERCRED) failed with errno ${c.errno()}`);
      }
      const view = new DataView(cred.buffer);
      return { pid: view.getInt32(0, true), uid: view.getUint32(4, true) };
    }
    const pid = new Int32Array(1);
    length[0] = 4;
    if (c.getsockopt(fd, SOL_LOCAL_DARWIN, LOCAL_PEERPID_DARWIN, ptr(pid), ptr(length)) !== 0) {
      throw new Error(`getsockopt(LOCAL_PEERPID) failed with errno ${c.errno()}`);
    }
    const xucred = new Uint8Array(XUCRED_SIZE_DARWIN);
    length[0] = XUCRED_SIZE_DARWIN;
    if (c.getsockopt(fd, SOL_LOCAL_DARWIN, LOCAL_PEERCRED_DARWIN, ptr(xucred), ptr(length)) !== 0) {
      throw new Error(`getsockopt(LOCAL_PEERCRED) failed with errno ${c.errno()}`);
    }
    return { pid: pid[0] as number, uid: new DataView(xucred.buffer).getUint32(XUCRED_UID_OFFSET_DARWIN, true) };
  } finally {
    c.close(fd);
  }
}

// ─── perf block (issue 11): isatty, pidfd_open + poll ──────────────────────────
// Its own dlopen of the same C library, so the symbols above stay as they are.

/** pidfd_open has this number on every Linux architecture (the asm-generic table, Linux ≥ 5.3). */
const SYS_PIDFD_OPEN = 434;
const POLLIN = 0x1;
const POLLFD_BYTES = 8;

type WaitLibc = {
  isatty(fd: number): number;
  poll(fds: Uint8Array, count: number, timeoutMs: number): number;
  pidfdOpen?(pid: number): number;
  errno(): number;
};

let waitLibc: WaitLibc | null | undefined;

function openWaitLibc(): WaitLibc | undefined {
  if (waitLibc !== undefined) return waitLibc ?? undefined;
  const errnoSymbol = process.platform === "darwin" ? "__error" : "__errno_location";
  const symbols = dlopenLibc({
    isatty: { args: [FFIType.i32], returns: FFIType.i32 },
    poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
    [errnoSymbol]: { args: [], returns: FFIType.ptr },
    ...(process.platform === "linux" ? { syscall: { args: [FFIType.i64, FFIType.i64, FFIType.i64], returns: FFIType.i64 } } : {}),
  });
  waitLibc = symbols
    ? {
        isatty: (fd) => symbols.isatty!(fd) as number,
        poll: (fds, count, timeoutMs) => symbols.poll!(ptr(fds), count, timeoutMs) as number,
        pidfdOpen: symbols.syscall ? (pid) => Number(symbols.syscall!(SYS_PIDFD_OPEN, pid, 0)) : undefined,
        errno: () => read.i32(symbols[errnoSymbol]!() as Pointer, 0),
      }
    : null;
  return waitLibc ?? undefined;
}

/**
 * isatty(3) without touching `process.stdout`: creating Bun's Node stream for
 * stdout costs ~2× a compiled empty program's whole start (measured in bench/).
 * Undefined when the C library cannot be loaded.
 */
export function isTerminal(fd: number): boolean | undefined {
  const c = openWaitLibc();
  return c ? c.isatty(fd) === 1 : undefined;
}

/**
 * A pidfd for `pid` (Linux ≥ 5.3): readable once that process has exited.
 * Undefined where unsupported or when no such process exists. The caller must
 * check the process's identity after opening (the pid may have been reused
 * before the open) and close the fd.
 */
export function openPidfd(pid: number): number | undefined {
  if (process.platform !== "linux" || !Number.isInteger(pid) || pid <= 0) return undefined;
  const fd = openWaitLibc()?.pidfdOpen?.(pid);
  return fd !== undefined && fd >= 0 ? fd : undefined;
}

/**
 * poll(2) one fd for readability, blocking this thread for at most `timeoutMs`.
 * "interrupted" for a signal (EINTR) or any error: the caller re-checks and retries.
 */
export function pollReadable(fd: number, timeoutMs: number): "readable" | "timeout" | "interrupted" {
  const c = openWaitLibc();
  if (!c) return "interrupted";
  const pollfd = new Uint8Array(POLLFD_BYTES);
  const view = new DataView(pollfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, POLLIN, true);
  const count = c.poll(pollfd, 1, Math.max(0, Math.floor(timeoutMs)));
  if (count > 0) return "readable";
  return count === 0 ? "timeout" : "interrupted";
}
// ─── end of perf block ─────────────────────────────────────────────────────────

// ─── tunnel block (issue 12): Unix socket send buffers ─────────────────────────
// Its own lazy dlopen, so a process that never moves bulk data never loads it.

const SOL_SOCKET = 1; // Linux
const SO_SNDBUF = 7;
const SO_DOMAIN = 39;
const SOCKADDR_UN_BYTES = 110;

type SocketLibc = {
  getsockopt(fd: number, level: number, name: number, value: Pointer, length: Pointer): number;
  setsockopt(fd: number, level: number, name: number, value: Pointer, length: number): number;
  getsockname(fd: number, address: Pointer, length: Pointer): number;
  getpeername(fd: number, address: Pointer, length: Pointer): number;
};

let socketLibc: SocketLibc | null | undefined;

function openSocketLibc(): SocketLibc | undefined {
  if (socketLibc !== undefined) return socketLibc ?? undefined;
  socketLibc = null;
  if (process.platform !== "linux") return undefined;
  const address = { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 } as const;
  const symbols = dlopenLibc({
    getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    setsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    getsockname: address,
    getpeername: address,
  });
  if (!symbols) return undefined;
  socketLibc = {
    getsockopt: (fd, level, option, value, length) => symbols.getsockopt!(fd, level, option, value, length) as number,
    setsockopt: (fd, level, option, value, length) => symbols.setsockopt!(fd, level, option, value, length) as number,
    getsockname: (fd, addr, length) => symbols.getsockname!(fd, addr, length) as number,
    getpeername: (fd, addr, length) => symbols.getpeername!(fd, addr, length) as number,
  };
  return socketLibc;
}

function intOption(c: SocketLibc, fd: number, option: number): number | undefined {
  const value = new Int32Array(1);
  const length = new Uint32Array([4]);
  return c.getsockopt(fd, SOL_SOCKET, option, ptr(value), ptr(length)) === 0 ? (value[0] as number) : undefined;
}

/** The path of a Unix socket address read by getsockname/getpeername, or undefined. */
function socketPath(c: SocketLibc, fd: number, which: "getsockname" | "getpeername"): string | undefined {
  const address = new Uint8Array(SOCKADDR_UN_BYTES);
  const length = new Uint32Array([SOCKADDR_UN_BYTES]);
  if (c[which](fd, ptr(address), ptr(length)) !== 0) return undefined;
  const end = Math.min(length[0] as number, SOCKADDR_UN_BYTES);
  if (end <= 2) return undefined;
  const nul = address.indexOf(0, 2);
  return Buffer.from(address.subarray(2, nul >= 0 && nul < end ? nul : end)).toString();
}

/** This process's Unix sockets bound or connected to `path` (accepted and client ends), by fd. */
function unixSocketsOn(c: SocketLibc, path: string): number[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc/self/fd");
  } catch {
    return [];
  }
  const found: number[] = [];
  for (const entry of entries) {
    const fd = Number(entry);
    if (intOption(c, fd, SO_DOMAIN) !== AF_UNIX) continue; // not a socket, or not a Unix one
    if (socketPath(c, fd, "getsockname") === path || socketPath(c, fd, "getpeername") === path) found.push(fd);
  }
  return found;
}

/**
 * Raises SO_SNDBUF to `bytes` on each of this process's Unix sockets bound or
 * connected to `path` whose buffer is smaller (Linux; elsewhere nothing).
 * Linux's default (208 KiB) splits every 700 KB data frame into several
 * writes and wake-ups on both ends. Returns how many sockets were raised.
 */
export function raiseUnixSendBuffers(path: string, bytes: number): number {
  const c = openSocketLibc();
  if (!c) return 0;
  let raised = 0;
  for (const fd of unixSocketsOn(c, path)) {
    // Linux reports twice what was set (its bookkeeping overhead).
    if ((intOption(c, fd, SO_SNDBUF) ?? 0) >= bytes * 2) continue;
    if (c.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, ptr(new Int32Array([bytes])), 4) === 0) raised += 1;
  }
  return raised;
}

/** SO_SNDBUF of each of this process's Unix sockets on `path`, as Linux reports it (empty elsewhere). */
export function unixSendBufferBytes(path: string): number[] {
  const c = openSocketLibc();
  if (!c) return [];
  return unixSocketsOn(c, path).map((fd) => intOption(c, fd, SO_SNDBUF) ?? 0);
}
// ─── end of tunnel block ───────────────────────────────────────────────────────

// ─── memory block (issue 11): madvise ─────────────────────────────────────────
// Its own lazy dlopen: only an app-server that went quiet (server/idle-trim.ts) loads it.

/** MADV_DONTNEED is 4 on every Linux architecture berth targets (x86-64, arm64). */
const MADV_DONTNEED_LINUX = 4;

type MemoryLibc = {
  madvise(address: bigint, length: bigint, advice: number): number;
  errno(): number;
};

let memoryLibc: MemoryLibc | null | undefined;

function openMemoryLibc(): MemoryLibc | undefined {
  if (memoryLibc !== undefined) return memoryLibc ?? undefined;
  memoryLibc = null;
  if (process.platform !== "linux") return undefined;
  const symbols = dlopenLibc({
    madvise: { args: [FFIType.u64, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
  if (!symbols) return undefined;
  memoryLibc = {
    madvise: (address, length, advice) => symbols.madvise!(address, length, advice) as number,
    errno: () => read.i32(symbols.__errno_location!() as Pointer, 0),
  };
  return memoryLibc;
}

/**
 * madvise(MADV_DONTNEED) on [start, end) of this process (Linux; elsewhere
 * "unsupported"). On a file mapping this unmaps the pages from this process
 * only: the page cache keeps them, and the next touch maps them again (a minor
 * fault). Private copies (anonymous pages of the mapping) are DISCARDED: the
 * caller must only pass ranges that have none. Returns 0 or the errno.
 */
export function madviseDontNeed(start: bigint, end: bigint): number | "unsupported" {
  const c = openMemoryLibc();
  if (!c) return "unsupported";
  return c.madvise(start, end - start, MADV_DONTNEED_LINUX) === 0 ? 0 : c.errno();
}

// ─── end of memory block ───────────────────────────────────────────────────────

// ─── inherited-signals block: a parent's blocked mask ─────────────────────────
// Its own lazy dlopen: only a process started with signals blocked loads it (platform/inherited.ts).

/** What a terminal sends its foreground group, as Linux numbers: SIGHUP, SIGINT, SIGQUIT, SIGTSTP. */
const TERMINAL_SIGNALS_LINUX = [1, 2, 3, 20] as const;
const SIG_BLOCK_LINUX = 0;
/** The action "ignore" as signal(2) takes it. */
const SIG_IGN = 1;

type SignalLibc = {
  sigprocmask: (how: number, set: Pointer | null, old: Pointer | null) => number;
  signal: (signal: number, action: Pointer | number | null) => Pointer | null;
};
let signalLibc: SignalLibc | null | undefined;
function openSignalLibc(): SignalLibc | undefined {
  if (signalLibc === undefined) {
    const symbols = dlopenLibc({
      sigprocmask: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
      signal: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.ptr },
    });
    signalLibc = symbols ? (symbols as unknown as SignalLibc) : null;
  }
  return signalLibc ?? undefined;
}

/** A sigset_t (Linux: bit signal-1, little-endian words) holding `signals`. */
function signalSet(signals: readonly number[]): Uint8Array {
  const set = new Uint8Array(128);
  for (const signal of signals) set[(signal - 1) >> 3] = (set[(signal - 1) >> 3] as number) | (1 << ((signal - 1) & 7));
  return set;
}

/**
 * Unblocks every signal in the calling (main) thread, which is the thread
 * Bun.spawn hands its mask to the children from. Threads the runtime started
 * before keep theirs: a signal for the process reaches the main thread.
 * `discardTerminalSignals` (a daemon, Linux): a terminal's signal that came
 * while it was blocked — before the daemon's setsid, see
 * withTerminalSignalsBlocked — is dropped first, not delivered: setting a
 * pending signal's action to "ignore" discards it (POSIX); the previous
 * action is put back. Returns whether the C library could be asked.
 */
export function unblockAllSignals(options: { discardTerminalSignals?: boolean } = {}): boolean {
  const c = openSignalLibc();
  if (!c) return false;
  if (options.discardTerminalSignals && process.platform === "linux") {
    for (const signal of TERMINAL_SIGNALS_LINUX) c.signal(signal, c.signal(signal, SIG_IGN));
  }
  return c.sigprocmask(SIG_SETMASK, ptr(new Uint8Array(128)), null) === 0;
}

/**
 * Runs `spawn` (a detached Bun.spawn) with the terminal's signals blocked in
 * the calling thread, which the child inherits: until its setsid the child is
 * still in berth's process group, the terminal's foreground group, and a
 * hangup or ^C there killed it. Linux; elsewhere, or without the C library,
 * `spawn` runs as it is.
 */
export function withTerminalSignalsBlocked<T>(spawn: () => T): T {
  const c = process.platform === "linux" ? openSignalLibc() : undefined;
  const previous = new Uint8Array(128);
  if (!c || c.sigprocmask(SIG_BLOCK_LINUX, ptr(signalSet(TERMINAL_SIGNALS_LINUX)), ptr(previous)) !== 0) return spawn();
  try {
    return spawn();
  } finally {
    c.sigprocmask(SIG_SETMASK, ptr(previous), null);
  }
}
// ─── end of inherited-signals block ────────────────────────────────────────────

// ─── child subreaper (Linux) ───────────────────────────────────────────────────
const PR_SET_CHILD_SUBREAPER = 36;
const WNOHANG = 1;

type ReaperLibc = { prctl(option: number, arg2: number, arg3: number, arg4: number, arg5: number): number; waitpid(pid: number, status: null, options: number): number };
let reaperLibc: ReaperLibc | null | undefined;

function openReaperLibc(): ReaperLibc | undefined {
  if (reaperLibc === undefined) {
    const symbols = dlopenLibc({
      prctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
      waitpid: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    });
    reaperLibc = symbols ? (symbols as unknown as ReaperLibc) : null;
  }
  return reaperLibc ?? undefined;
}

/**
 * Linux: makes this process the "child subreaper" of its descendants
 * (prctl PR_SET_CHILD_SUBREAPER): an orphan among them — say a daemon that
 * double-forked and called setsid — is re-parented to it instead of to init.
 * Whoever calls this must reap them (reapExitedChild). False elsewhere, or
 * when the C library or the kernel refuses.
 */
export function becomeChildSubreaper(): boolean {
  if (process.platform !== "linux") return false;
  const c = openReaperLibc();
  return c !== undefined && c.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) === 0;
}

/**
 * Reaps the child `pid` if it has exited (waitpid WNOHANG); true when it
 * did. Never for a child Bun spawned: Bun waits for its own by pid, and one
 * reaped here would never report its exit.
 */
export function reapExitedChild(pid: number): boolean {
  const c = openReaperLibc();
  return c !== undefined && pid > 0 && c.waitpid(pid, null, WNOHANG) === pid;
}
// ─── end of child subreaper block ──────────────────────────────────────────────

// ─── a process's input descriptors (Linux: server/process/direct-input.ts, pty-input.ts) ───
const F_DUPFD_CLOEXEC_LINUX = 1030;
const F_SETFL = 4;
const O_NONBLOCK_LINUX = 0o4000;
const O_CLOEXEC_LINUX = 0o2000000;
type InputLibc = { fcntl(fd: number, command: number, arg: number): number; pipe2(fds: Pointer, flags: number): number; close(fd: number): number };
let inputLibc: InputLibc | null | undefined;

function openInputLibc(): InputLibc | undefined {
  if (process.platform !== "linux") return undefined;
  if (inputLibc === undefined) {
    const symbols = dlopenLibc({
      fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
      pipe2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
      close: { args: [FFIType.i32], returns: FFIType.i32 },
    });
    inputLibc = symbols ? (symbols as unknown as InputLibc) : null;
  }
  return inputLibc ?? undefined;
}

/** A close-on-exec duplicate of `fd` (fcntl F_DUPFD_CLOEXEC), owned by the caller; undefined where that fails. */
export function duplicateFd(fd: number): number | undefined {
  const copy = openInputLibc()?.fcntl(fd, F_DUPFD_CLOEXEC_LINUX, 0) ?? -1;
  return copy >= 0 ? copy : undefined;
}

/** A close-on-exec pipe whose write end alone is non-blocking (a child's stdin: its read end must block); undefined where that fails. */
export function nonBlockingPipe(): { read: number; write: number } | undefined {
  const c = openInputLibc();
  const fds = new Int32Array(2);
  if (!c || c.pipe2(ptr(fds), O_CLOEXEC_LINUX) !== 0) return undefined;
  const [read, write] = [fds[0] as number, fds[1] as number];
  if (c.fcntl(write, F_SETFL, O_NONBLOCK_LINUX) !== 0) {
    c.close(read);
    c.close(write);
    return undefined;
  }
  return { read, write };
}
