/**
 * The `process/*` family: processes and terminals that outlive connections.
 * The table only checks params and calls into src/server/process/.
 */
import { ProcessManager, DEFAULT_PROCESS_LIMITS, type ProcessLimits } from "../process/manager.ts";
import type { ManagedProcess } from "../process/managed.ts";
import { MAX_WRITER_ID_CHARS, WriterSeqs } from "../process/write-seqs.ts";
import { absPath, arrayOf, base64, int, nonEmptyStr, object, oneOf, optional, params, recordOf, str, token } from "./params.ts";
import { API_INVALID_PARAMS, API_NOT_FOUND, ApiError, method, type ApiFamily } from "./types.ts";

export const SIGNALS = ["SIGINT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCONT", "SIGSTOP", "SIGWINCH"] as const;
const MAX_ARGV = 4_096;
const MAX_ENV_KEYS = 4_096;
const MAX_TERMINAL_CELLS = 10_000;

const terminalSize = object({ cols: int(1, MAX_TERMINAL_CELLS), rows: int(1, MAX_TERMINAL_CELLS) });
const processId = { processId: nonEmptyStr };
const envValue = (v: unknown, name: string) => {
  const value = str(v, name);
  if (value.includes("\0")) throw new ApiError(API_INVALID_PARAMS, `invalid params: ${name} must not contain NUL`);
  return value;
};
const argvItem = (v: unknown, name: string) => envValue(v, name);
const since = recordOf(int(0), { maxKeys: 3 });
/**
 * process/write: `data` (base64) to the process's stdin or terminal. Optional, together: `writer` (a client's
 * random id) and `seq` (increasing per distinct chunk, the same when the chunk is sent again after a reconnect):
 * a seq at or below the writer's highest applied one is answered `{duplicate: true}` and not written again
 * (write-seqs.ts). Without them a write is applied each time it is sent.
 */
const writeParams = params({ ...processId, data: base64, writer: optional(token(MAX_WRITER_ID_CHARS)), seq: optional(int(0)) });

export type ProcessFamilyOptions = {
  limits?: Partial<ProcessLimits>;
  stopGraceMs?: number;
  /** Where running processes are recorded (createApi ends a previous app-server's leftovers found there at start). */
  ledgerPath?: string;
};

function running(managed: ManagedProcess, what: string): ManagedProcess {
  if (managed.state !== "running" || !managed.unreaped) {
    throw new ApiError(API_NOT_FOUND, `process ${managed.processId} has exited; it can no longer ${what}`);
  }
  return managed;
}

export function processFamily(options: ProcessFamilyOptions = {}): ApiFamily & { manager: ProcessManager } {
  const manager = new ProcessManager({ ...DEFAULT_PROCESS_LIMITS, ...options.limits }, options.ledgerPath);
  /** Per process: the highest seq applied per writer (forgotten with the process). */
  const writerSeqs = new WeakMap<ManagedProcess, WriterSeqs>();
  const methods = {
    "process/spawn": method(
      params({
        argv: optional(arrayOf(argvItem, { min: 1, max: MAX_ARGV })),
        cwd: optional(absPath),
        env: optional(recordOf(envValue, { maxKeys: MAX_ENV_KEYS })),
        terminal: optional(terminalSize),
        name: optional(nonEmptyStr),
      }),
      (p, conn) => {
        const managed = manager.spawn(p);
        managed.attach(conn);
        return { process: managed.info() };
      },
    ),
    "process/attach": method(params({ ...processId, since: optional(since) }), (p, conn) => {
      const managed = manager.find(p.processId);
      for (const stream of Object.keys(p.since ?? {})) {
        if (!managed.rings.has(stream as never)) throw new ApiError(API_INVALID_PARAMS, `invalid params: since.${stream} names no stream of ${managed.processId}`);
      }
      managed.attach(conn, p.since);
      return { process: managed.info() };
    }),
    "process/detach": method(params(processId), (p, conn) => ({ detached: manager.find(p.processId).detach(conn) })),
    "process/write": method(writeParams, (p) => {
      const managed = running(manager.find(p.processId), "take input");
      if ((p.writer === undefined) !== (p.seq === undefined)) throw new ApiError(API_INVALID_PARAMS, "invalid params: writer and seq go together");
      if (p.writer === undefined || p.seq === undefined) {
        managed.write(p.data);
        return {};
      }
      let seqs = writerSeqs.get(managed);
      if (seqs?.decide(p.writer, p.seq) === "duplicate") return { duplicate: true };
      // Recorded only once applied: a refused write (-32001) throws before any byte is queued, and is applied when sent again.
      managed.write(p.data);
      if (!seqs) writerSeqs.set(managed, (seqs = new WriterSeqs()));
      seqs.applied(p.writer, p.seq);
      return {};
    }),
    "process/closeStdin": method(params(processId), (p) => {
      running(manager.find(p.processId), "take input").closeStdin();
      return {};
    }),
    "process/resize": method(params({ ...processId, cols: int(1, MAX_TERMINAL_CELLS), rows: int(1, MAX_TERMINAL_CELLS) }), (p) => {
      const managed = running(manager.find(p.processId), "be resized");
      if (!managed.terminal) throw new ApiError(API_INVALID_PARAMS, `invalid params: process ${managed.processId} has no terminal to resize`);
      managed.resize({ cols: p.cols, rows: p.rows });
      return { process: managed.info() };
    }),
    "process/signal": method(params({ ...processId, signal: oneOf(SIGNALS) }), (p) => {
      const managed = running(manager.find(p.processId), "be signalled");
      return { delivered: managed.signalGroup(p.signal) };
    }),
    "process/list": method(params({}), () => ({ processes: manager.all().map((m) => m.info()) })),
    "process/remove": method(params(processId), (p) => {
      manager.remove(manager.find(p.processId));
      return {};
    }),
  };
  return {
    manager,
    methods,
    shutdown: () => manager.shutdown(options.stopGraceMs ?? 0),
  };
}
