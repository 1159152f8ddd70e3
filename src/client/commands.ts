/**
 * The `berth remote HOST …` subcommands that use the app-server API: thin
 * users of connection.ts and follow.ts. The interactive ones (`shell`, `run`,
 * `attach`) return `interactiveExit(code)`: they print JSON only when they
 * fail to start (the error thrown before the terminal is taken).
 */
import { constants } from "node:os";
import { interactiveExit } from "../commands/_shared.ts";
import { workingForLong } from "../platform/jit.ts";
import { BerthError } from "../errors.ts";
import type { RemoteArgs } from "./args.ts";
import { connect, RpcError, type Connection } from "./connection.ts";
import { followProcess, type Follower, type Outcome, type RemoteProcess } from "./follow.ts";
import { forward } from "./forward.ts";
import { KeyboardInput } from "./keyboard.ts";
import { parseDetachKey } from "./offsets.ts";
import { rawTerminal, terminalSize } from "./terminal.ts";

const API_NOT_FOUND = -32004;

/** Exit status once our stdout or stderr is gone (`berth remote HOST run … | head`): a process killed by SIGPIPE's. */
export const EXIT_BROKEN_PIPE = 128 + constants.signals.SIGPIPE;

/**
 * Our stdout and stderr as the remote output's destination. The first write
 * error (EPIPE: the reader went away) runs `onBroken` once and later output is
 * dropped: a write that threw inside the connection's reader would kill its
 * ssh, and the follower would reconnect and replay into the closed pipe for ever.
 */
function localOutput(onBroken: () => void) {
  let broken = false;
  const fail = () => {
    if (broken) return;
    broken = true;
    onBroken();
  };
  // Kept for the process's life: with a listener, Bun reports EPIPE here instead of throwing or printing a trace.
  for (const stream of [process.stdout, process.stderr]) stream.on("error", fail);
  return {
    get broken() {
      return broken;
    },
    /** Writes `data`; when the stream's buffer is full, the promise of its drain (the caller stops reading the host). */
    write(stream: NodeJS.WriteStream, data: Uint8Array): Promise<unknown> | undefined {
      if (broken) return undefined;
      try {
        if (stream.write(data)) return undefined;
      } catch {
        fail();
        return undefined;
      }
      // A stream that fails instead of draining must not hold the connection's reading (the detach answer comes through it).
      return new Promise((resolve) => {
        stream.once("drain", resolve);
        stream.once("error", resolve);
        stream.once("close", resolve);
      });
    },
  };
}

const notice = (raw: boolean) => (text: string) => {
  try {
    process.stderr.write(`berth: ${text}${raw ? "\r\n" : "\n"}`);
  } catch {
    // stderr is gone: nobody to tell
  }
};

/** Pure: the exit status for a remote process's end (a signal: 128 + its number, as a shell reports it). */
export function exitStatusOf(outcome: Outcome): number {
  if (outcome.kind === "detached") return 0;
  if (outcome.kind === "lost" || outcome.kind === "inputRefused") return 1;
  if (outcome.exitCode !== null) return outcome.exitCode;
  const number = outcome.signal ? (constants.signals as Record<string, number>)[outcome.signal] : undefined;
  return number ? 128 + number : 1;
}

/** What the app-server answered to a spawn or attach, as an error a person understands. */
function startFailure(host: string, error: unknown, kind: "spawn" | "attach"): unknown {
  if (!(error instanceof RpcError)) return error;
  if (kind === "attach" && error.code === API_NOT_FOUND) return new BerthError("NOT_RUNNING", `${host}: ${error.message}; \`berth remote ${host} ps\` lists the processes.`);
  return new BerthError("START_FAILED", `${host} refused to start it: ${error.message}`);
}

/** The first spawn/attach of a follower, with the app-server's refusals turned into BerthErrors. */
function firstOrFail(host: string, kind: "spawn" | "attach", first: (conn: Connection) => Promise<RemoteProcess>) {
  return (conn: Connection) => first(conn).catch((error) => Promise.reject(startFailure(host, error, kind)));
}

/** Finds a process by id or (running first) by name. */
async function findProcess(conn: Connection, target: string): Promise<RemoteProcess> {
  const { processes } = await conn.call<{ processes: RemoteProcess[] }>("process/list", {});
  const found =
    processes.find((p) => p.processId === target) ??
    processes.find((p) => p.name === target && p.state === "running") ??
    processes.find((p) => p.name === target);
  if (!found) throw new BerthError("NOT_RUNNING", `no process ${JSON.stringify(target)} on ${conn.host}; \`berth remote ${conn.host} ps\` lists them.`);
  return found;
}

async function attachTo(conn: Connection, processId: string): Promise<RemoteProcess> {
  return (await conn.call<{ process: RemoteProcess }>("process/attach", { processId })).process;
}

/** Attaches to the running terminal process NAME, or starts the login shell under that name. */
async function attachOrSpawnShell(conn: Connection, name: string): Promise<RemoteProcess> {
  const { processes } = await conn.call<{ processes: RemoteProcess[] }>("process/list", {});
  const running = processes.find((p) => p.name === name && p.state === "running");
  if (running) return attachTo(conn, running.processId);
  try {
    return (await conn.call<{ process: RemoteProcess }>("process/spawn", { name, terminal: terminalSize() })).process;
  } catch (error) {
    // Another client started it between our list and spawn: attach to theirs.
    if (error instanceof RpcError) {
      const again = (await conn.call<{ processes: RemoteProcess[] }>("process/list", {})).processes.find((p) => p.name === name && p.state === "running");
      if (again) return attachTo(conn, again.processId);
      throw new BerthError("START_FAILED", `the host refused to start a shell: ${error.message}`);
    }
    throw error;
  }
}

/** A terminal process on this terminal: raw mode, keystrokes, window size, the detach key. */
async function interactive(host: string, kind: "spawn" | "attach", first: (conn: Connection) => Promise<RemoteProcess>, howToReattach: (p: RemoteProcess) => string) {
  const detachKey = parseDetachKey(process.env.BERTH_DETACH_KEY);
  const conn = await connect(host);
  let attachedFollower: Follower | undefined;
  const output = localOutput(() => void attachedFollower?.detach());
  const follower = await followProcess({
    connection: conn,
    open: () => connect(host),
    first: firstOrFail(host, kind, first),
    onOutput: (_stream, data) => output.write(process.stdout, data),
    onNotice: notice(true),
    // After a reconnect the window may have changed meanwhile.
    onAttached: () => attachedFollower?.resize(terminalSize().cols, terminalSize().rows),
  });
  attachedFollower = follower;
  workingForLong();
  if (output.broken) void follower.detach(); // the pipe broke on the first output, before the follower was ours
  // The detach key is read even while the follower holds input (keyboard.ts).
  const keyboard = new KeyboardInput({ write: (data) => follower.write(data), detach: () => void follower.detach() }, detachKey);
  const terminal = rawTerminal({
    onInput: (data) => keyboard.take(data),
    onResize: ({ cols, rows }) => follower.resize(cols, rows),
    onSignal: () => void follower.detach(),
  });
  let outcome: Outcome;
  try {
    follower.resize(terminalSize().cols, terminalSize().rows);
    outcome = await follower.done;
  } finally {
    terminal.restore();
  }
  if (outcome.kind === "detached") notice(false)(`detached; ${howToReattach(follower.process)} re-attaches.`);
  if (outcome.kind === "lost" || outcome.kind === "inputRefused") notice(false)(outcome.reason);
  return interactiveExit(output.broken && outcome.kind === "detached" ? EXIT_BROKEN_PIPE : exitStatusOf(outcome));
}

/** A process with stdout/stderr streamed to ours; Ctrl-C detaches. */
async function streaming(host: string, kind: "spawn" | "attach", first: (conn: Connection) => Promise<RemoteProcess>) {
  const conn = await connect(host);
  let started: Follower | undefined;
  const output = localOutput(() => void started?.detach());
  const follower: Follower = await followProcess({
    connection: conn,
    open: () => connect(host),
    first: firstOrFail(host, kind, first),
    onOutput: (stream, data) => output.write(stream === "stderr" ? process.stderr : process.stdout, data),
    onNotice: notice(false),
  });
  started = follower;
  workingForLong();
  if (output.broken) void follower.detach(); // the pipe broke on the first output, before the follower was ours
  const onInterrupt = () => void follower.detach();
  process.on("SIGINT", onInterrupt);
  let outcome: Outcome;
  try {
    outcome = await follower.done;
  } finally {
    process.off("SIGINT", onInterrupt);
  }
  const ref = follower.process.name ?? follower.process.processId;
  if (outcome.kind === "detached") notice(false)(`detached; it keeps running. \`berth remote ${host} attach ${ref}\` re-attaches.`);
  if (outcome.kind === "lost") notice(false)(outcome.reason);
  return interactiveExit(output.broken && outcome.kind === "detached" ? EXIT_BROKEN_PIPE : exitStatusOf(outcome));
}

async function withConnection<T>(host: string, use: (conn: Connection) => Promise<T>): Promise<T> {
  const conn = await connect(host);
  try {
    return await use(conn);
  } catch (error) {
    if (error instanceof RpcError) {
      throw new BerthError(error.code === API_NOT_FOUND ? "NOT_RUNNING" : "INTERNAL", `the app-server on ${host} said: ${error.message}`);
    }
    throw error;
  } finally {
    await conn.close();
  }
}

export async function runRemote(args: RemoteArgs): Promise<object> {
  const { host } = args;
  switch (args.command) {
    case "shell":
      return interactive(host, "spawn", (conn) => attachOrSpawnShell(conn, args.name), (p) => `\`berth remote ${host} shell ${p.name ?? p.processId}\``);
    case "run":
      return streaming(host, "spawn", async (conn) => (await conn.call<{ process: RemoteProcess }>("process/spawn", { argv: args.argv, ...(args.name ? { name: args.name } : {}) })).process);
    case "attach": {
      const conn = await connect(host);
      const found = await findProcess(conn, args.target).finally(() => conn.close());
      const first = (c: Connection) => attachTo(c, found.processId);
      return found.terminal
        ? interactive(host, "attach", first, (p) => `\`berth remote ${host} attach ${p.name ?? p.processId}\``)
        : streaming(host, "attach", first);
    }
    case "ps":
      return withConnection(host, async (conn) => ({ status: "ok", host, processes: (await conn.call<{ processes: RemoteProcess[] }>("process/list", {})).processes }));
    case "kill":
      return withConnection(host, async (conn) => {
        const found = await findProcess(conn, args.target);
        await conn.call("process/signal", { processId: found.processId, signal: args.signal });
        return { status: "signalled", host, processId: found.processId, ...(found.name ? { name: found.name } : {}), signal: args.signal };
      });
    case "forward":
      return forward(host, args.forward);
    case "bootstrap":
      throw new Error("bootstrap is handled by bootstrap.ts");
  }
}
