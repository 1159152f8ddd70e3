/**
 * The processes of one app-server run: spawn (pipes or a pseudo-terminal,
 * each in its own process group), look up by id or name, forget exited ones
 * after `retainExitedMs`, and end them all when the server stops.
 */
import { longTimeout } from "../../timers.ts";
import { closeSync } from "node:fs";
import { homedir } from "node:os";
import { loginShell } from "../api/system.ts";
import { errnoCode } from "../../errors.ts";
import { API_LIMIT, API_NOT_FOUND, API_PERMISSION_DENIED, ApiError, API_INVALID_PARAMS } from "../api/types.ts";
import { ManagedProcess, OUTPUT_DRAIN_AFTER_EXIT_MS, type StreamName, type TerminalSize } from "./managed.ts";
import { endProcessTrees, leftBehind } from "./tree.ts";
import { writeLedger, type LedgerEntry } from "./ledger.ts";
import { processIdentity, type ProcessEntry } from "../../platform/process.ts";
import { spawnUnderUserUmask, USER_UMASK_ENV } from "../../platform/inherited.ts";
import type { OrphanReaper } from "./orphans.ts";
import { DirectInput, openStdinPipe } from "./direct-input.ts";
import { openPtyInput } from "./pty-input.ts";

export type ProcessLimits = { scrollbackBytes: number; max: number; retainExitedMs: number };

export const DEFAULT_PROCESS_LIMITS: ProcessLimits = { scrollbackBytes: 2 * 1024 * 1024, max: 64, retainExitedMs: 86_400_000 };
export const TERMINAL_TERM = "xterm-256color";

export type SpawnRequest = {
  argv?: string[];
  cwd?: string;
  env?: Record<string, string>;
  terminal?: TerminalSize;
  name?: string;
};


export class ProcessManager {
  private readonly processes = new Map<string, ManagedProcess>();
  private readonly forgetTimers = new Map<string, { cancel(): void }>();
  private nextNumber = 1;
  private stopping = false;
  /**
   * What forgotten processes left in their groups (ManagedProcess.leftovers):
   * process/remove or retention forgets the process, not what it left running,
   * which shutdown must still end. Only the ones still running are kept.
   */
  private forgottenLeftovers: ProcessEntry[] = [];
  /** Pids of the children Bun spawned, until Bun has reported their exit: never reaped by the orphan reaper. */
  private readonly bunChildren = new Set<number>();
  private orphans: OrphanReaper | undefined;

  /** `ledgerPath`: where the running processes are recorded for the next app-server (see ledger.ts). */
  constructor(
    readonly limits: ProcessLimits,
    private readonly ledgerPath?: string,
  ) {}

  private recordRunning(): void {
    if (!this.ledgerPath) return;
    const entries: LedgerEntry[] = [];
    for (const p of this.running()) if (p.identity && p.unreaped) entries.push({ pid: p.pid, identity: p.identity });
    // What reaped leaders left in their groups: a SIGKILLed app-server cannot end those at stop either.
    for (const left of [...this.all().flatMap((p) => p.leftovers), ...this.forgottenLeftovers]) {
      if (processIdentity(left.pid) === left.identity) entries.push({ pid: left.pid, identity: left.identity, member: true });
    }
    // Orphans re-parented to this server (orphans.ts): each ended alone, while it is the process recorded now.
    for (const pid of this.orphans?.adopted() ?? []) {
      const identity = processIdentity(pid);
      if (identity) entries.push({ pid, identity, member: true });
    }
    writeLedger(this.ledgerPath, entries);
  }

  running(): ManagedProcess[] {
    return [...this.processes.values()].filter((p) => p.state === "running");
  }

  all(): ManagedProcess[] {
    return [...this.processes.values()];
  }

  /** By id, or by the name of a process (a running one first). */
  find(idOrName: string): ManagedProcess {
    const byId = this.processes.get(idOrName);
    if (byId) return byId;
    const named = this.all().filter((p) => p.name === idOrName);
    const found = named.find((p) => p.state === "running") ?? named.at(-1);
    if (!found) throw new ApiError(API_NOT_FOUND, `no process ${JSON.stringify(idOrName)}; process/list shows the ones this app-server knows`);
    return found;
  }

  spawn(request: SpawnRequest): ManagedProcess {
    if (this.stopping) throw new ApiError(API_LIMIT, "the app-server is stopping; reconnect and spawn again");
    if (this.running().length >= this.limits.max) {
      throw new ApiError(API_LIMIT, `${this.limits.max} processes already run (settings processes.max); end one first`);
    }
    if (request.name !== undefined && this.running().some((p) => p.name === request.name)) {
      throw new ApiError(API_INVALID_PARAMS, `invalid params: name ${JSON.stringify(request.name)} is already used by a running process`);
    }
    // The login shell, the one system/info names ($SHELL, else the passwd entry, else /bin/sh).
    const argv = request.argv ?? [loginShell(), "-l"];
    const cwd = request.cwd ?? homedir();
    const processId = `p${this.nextNumber++}-${crypto.randomUUID().slice(0, 8)}`;
    const managed = new ManagedProcess(processId, argv, cwd, request.name, request.terminal, this.limits.scrollbackBytes);
    const env: Record<string, string | undefined> = { ...process.env, ...(request.terminal ? { TERM: TERMINAL_TERM } : {}), ...request.env };
    delete env[USER_UMASK_ENV];
    try {
      managed.proc = spawnUnderUserUmask(() => this.spawnProcess(managed, argv, cwd, env, request));
    } catch (error) {
      throw spawnError(error, argv[0] as string, cwd);
    }
    const pid = managed.pid;
    this.bunChildren.add(pid);
    const reported = () => void this.bunChildren.delete(pid);
    managed.proc.exited.then(reported, reported);
    try {
      managed.identity = processIdentity(managed.pid);
    } catch (error) {
      // Started, but its /proc entry cannot be read (the open-files limit): never left running untracked.
      abandon(managed);
      throw spawnError(error, argv[0] as string, cwd);
    }
    this.processes.set(processId, managed);
    this.recordRunning();
    void this.follow(managed);
    return managed;
  }

  /** Bun.spawn of a user's process: in a pseudo-terminal, or with pipes in a group of its own. */
  private spawnProcess(managed: ManagedProcess, argv: string[], cwd: string, env: Record<string, string | undefined>, request: SpawnRequest): ManagedProcess["proc"] {
    if (!request.terminal) {
      // Linux: stdin is a pipe of ours (direct-input.ts), so what the process has not read is known exactly.
      const pipe = openStdinPipe();
      try {
        const proc = Bun.spawn(argv, { cwd, env, stdin: pipe?.read ?? "pipe", stdout: "pipe", stderr: "pipe", detached: true });
        if (pipe) managed.input = new DirectInput(pipe.write, managed.processId);
        return proc as ManagedProcess["proc"];
      } catch (error) {
        if (pipe) closeSync(pipe.write);
        throw error;
      } finally {
        if (pipe) closeSync(pipe.read); // the child has its copy
      }
    }
    const proc: ManagedProcess["proc"] = Bun.spawn(argv, {
      cwd,
      env,
      terminal: {
        cols: request.terminal.cols,
        rows: request.terminal.rows,
        name: TERMINAL_TERM,
        data: (_terminal, data) => managed.output("terminal", data),
        drain: () => managed.inputDrained(),
      },
    });
    managed.terminal = proc.terminal;
    managed.input = openPtyInput(proc.pid, managed.processId);
    return proc;
  }

  /** Reads pipes into the rings; once exited and drained, records the exit and schedules forgetting. */
  private async follow(managed: ManagedProcess): Promise<void> {
    const pumps: Promise<void>[] = [];
    if (!managed.terminal) {
      pumps.push(readInto(managed, "stdout", managed.proc.stdout as ReadableStream<Uint8Array>));
      pumps.push(readInto(managed, "stderr", managed.proc.stderr as ReadableStream<Uint8Array>));
    }
    await managed.proc.exited;
    // Reaped just now: record what it left in its group before the pid can be reused.
    managed.leftovers = leftBehind(managed.pid);
    const drained = Promise.all(pumps);
    await Promise.race([drained, Bun.sleep(OUTPUT_DRAIN_AFTER_EXIT_MS)]);
    managed.input?.close(); // input nobody will read; our copy of its descriptor
    if (managed.terminal) {
      // The pty's last bytes arrive through its data callback; give them a moment, then close it.
      await Bun.sleep(Math.min(50, OUTPUT_DRAIN_AFTER_EXIT_MS));
      managed.terminal.close();
    }
    const signal = managed.proc.signalCode;
    managed.markExited(managed.proc.exitCode, typeof signal === "number" ? String(signal) : signal);
    if (!this.stopping) this.recordRunning();
    // A retention past setTimeout's limit (~24.8 days) would otherwise forget it after 1 ms (see timers.ts).
    this.forgetTimers.set(managed.processId, longTimeout(() => this.forget(managed.processId), this.limits.retainExitedMs));
    this.forgetOldestExited();
  }

  /** Exited processes keep their scrollback: at most `max` of them are kept, the oldest forgotten first. */
  private forgetOldestExited(): void {
    const exited = this.all().filter((p) => p.state === "exited");
    for (const old of exited.slice(0, Math.max(0, exited.length - this.limits.max))) this.forget(old.processId);
  }

  remove(managed: ManagedProcess): void {
    if (managed.state === "running") {
      throw new ApiError(API_INVALID_PARAMS, `invalid params: process ${managed.processId} is still running; signal it and wait for process/exited first`);
    }
    this.forget(managed.processId);
  }

  private forget(processId: string): void {
    this.forgetTimers.get(processId)?.cancel();
    this.forgetTimers.delete(processId);
    const forgotten = this.processes.get(processId);
    forgotten?.release();
    this.processes.delete(processId);
    if (forgotten && forgotten.leftovers.length > 0) {
      // Bounded by what still runs: the ones gone (or whose pid now names another process) are dropped.
      this.forgottenLeftovers = [...this.forgottenLeftovers, ...forgotten.leftovers].filter((entry) => processIdentity(entry.pid) === entry.identity);
    }
  }

  /**
   * Makes the app-server the subreaper of what its processes start (orphans.ts): call before the first spawn.
   * Only for the real daemon: a process that is not one (a test running a server in itself) has children of its own.
   */
  async adoptOrphans(): Promise<boolean> {
    this.orphans ??= await (await import("./orphans.ts")).adoptOrphans(
      (pid) => this.bunChildren.has(pid),
      () => {
        if (!this.stopping) this.recordRunning();
      },
    );
    return this.orphans !== undefined;
  }

  /** Ends every running process (terminals SIGHUP, others SIGTERM, then SIGKILL after graceMs); returns how many ran. */
  async shutdown(graceMs: number): Promise<{ processesEnded: number }> {
    this.stopping = true;
    const running = this.running();
    await endProcessTrees(running, graceMs, [...this.all().flatMap((p) => p.leftovers), ...this.forgottenLeftovers]);
    this.recordRunning();
    for (const timer of this.forgetTimers.values()) timer.cancel();
    this.orphans?.sweep(); // what ended just now leaves no zombie (the rest goes to init when the server exits)
    this.orphans?.stop();
    return { processesEnded: running.length };
  }
}

async function readInto(managed: ManagedProcess, stream: StreamName, readable: ReadableStream<Uint8Array>): Promise<void> {
  try {
    for await (const chunk of readable) managed.output(stream, chunk);
  } catch {
    // the pipe broke: the process is gone
  }
}

/** Ends a process just spawned (not yet reaped, so its pid is still this child) and lets go of its descriptors. */
function abandon(managed: ManagedProcess): void {
  managed.proc.kill("SIGKILL");
  if (managed.terminal) managed.terminal.close();
  for (const stream of [managed.proc.stdout, managed.proc.stderr]) {
    if (stream instanceof ReadableStream) void stream.cancel().catch(() => {});
  }
}

/** Bun reports a failed dup(2) of a new pseudo-terminal without an errno: in practice the open-files limit. */
const PTY_DUP_FAILURE = /duplicate PTY file descriptor/i;

function spawnError(error: unknown, program: string, cwd: string): ApiError {
  const errno = errnoCode(error);
  const what = `cannot start ${program} in ${cwd}: ${(error as Error).message}`;
  if (errno === "ENOENT") return new ApiError(API_NOT_FOUND, what, { errno });
  if (errno === "EACCES" || errno === "EPERM") return new ApiError(API_PERMISSION_DENIED, what, { errno });
  // The app-server's open-files or process limit (`ulimit -n`/`-u` of whoever started it), not the client's params.
  if (errno === "EMFILE" || errno === "ENFILE" || errno === "EAGAIN") return new ApiError(API_LIMIT, what, { errno });
  if (!errno && PTY_DUP_FAILURE.test((error as Error).message)) return new ApiError(API_LIMIT, what);
  return new ApiError(API_INVALID_PARAMS, `invalid params: ${what}`, errno ? { errno } : undefined);
}
