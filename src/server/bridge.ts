/**
 * `berth connect`: stdin/stdout ⇄ the app-server's WebSocket, one JSON-RPC
 * message per `\n`-terminated line each way. Bounded both ways: stdin is read
 * only while the socket's send buffer is below BRIDGE_HIGH_WATER_BYTES, and
 * the socket is paused while that much output waits for a slow stdout.
 */
import { BerthError, describeError } from "../errors.ts";
import { foreignServerError, isOurServer, startAppServer } from "../daemon/app-server.ts";
import type { Context } from "../daemon/context.ts";
import { checkSocketDir } from "../daemon/socket-dir.ts";
import { logger } from "../output.ts";
import { CLI_VERSION } from "../version.ts";
import { probeInitialize } from "./client.ts";
import { raiseUnixSendBuffers } from "../platform/ffi.ts";
import { parseRpcText } from "../rpc-data.ts";
import { bridgeStdin, protocolTerminal } from "./bridge-tty.ts";
import { UNIX_SEND_BUFFER_BYTES } from "./conn.ts";
import { MAX_FRAME_BYTES } from "./serve.ts";

/** Protocol version announced in the `connected` line. */
export const BRIDGE_PROTOCOL = 1;
/** Exit codes after the `connected` line (spec "Connecting"). */
export const EXIT_STDIN_EOF = 0;
export const EXIT_SERVER_CLOSED = 75;
export const EXIT_LINE_TOO_LONG = 65;
/** Stop reading stdin / the socket while this much waits to be written the other way. */
export const BRIDGE_HIGH_WATER_BYTES = 4 * 1024 * 1024;
const BRIDGE_LOW_WATER_BYTES = 1024 * 1024;
const CONNECT_TIMEOUT_MS = 5_000;
const PROBE_TIMEOUT_MS = 3_000;
/** After stdin EOF, wait this long for replies to requests already sent, then for the close handshake. */
const CLOSE_WAIT_MS = 5_000;
const SEND_POLL_MS = 2;
/**
 * Once the bridge ends (stdin EOF, the server closed), stdout gets this long, plus the time its backlog takes
 * at STDOUT_DRAIN_MIN_BYTES_PER_S, to take what waits; the allowance starts again whenever it takes some. A
 * reader that takes nothing (a client that closed its end of stdin and never reads) no longer keeps connect,
 * and what it holds, alive for ever.
 */
const STDOUT_DRAIN_GRACE_MS = 10_000;
const STDOUT_DRAIN_MIN_BYTES_PER_S = 16 * 1024;
const STDOUT_DRAIN_POLL_MS = 250;
/** The stdout sink buffers up to this much before writing on its own (one large write instead of many). */
const STDOUT_BATCH_BYTES = 1024 * 1024;
/** Unanswered request ids remembered for the wait at EOF; beyond this, later ones are not waited for. */
const MAX_TRACKED_REQUESTS = 65_536;

export type ConnectedLine = {
  status: "connected";
  protocol: number;
  pid: number;
  appServerVersion: string;
  cliVersion: string;
  socketPath: string;
};

/** What `connect` hands the renderer: the first line, then the stream that decides the exit code. */
export type Bridge = { firstLine: ConnectedLine; run(): Promise<number> };

type PausableWebSocket = WebSocket & { pause(): boolean; resume(): boolean };

/** Pure: the key of a request's id (undefined for notifications, replies and anything unparsable). */
export function requestKey(text: string): string | undefined {
  try {
    const message = parseRpcText(text) as Record<string, unknown> | null; // a big tunnel/write's base64 is not run through JSON.parse
    if (typeof message !== "object" || message === null || !("id" in message)) return undefined;
    return typeof message.method === "string" || !("result" in message || "error" in message) ? JSON.stringify(message.id) : undefined;
  } catch {
    return undefined;
  }
}

/** Pure: the id key of a reply (a message with an id and no method). */
function replyKey(text: string): string | undefined {
  // Notifications start with {"jsonrpc":"2.0","method" on this server: skip parsing those.
  if (text.startsWith('{"jsonrpc":"2.0","method"')) return undefined;
  try {
    const message = JSON.parse(text) as Record<string, unknown> | null;
    return typeof message === "object" && message !== null && "id" in message && !("method" in message) ? JSON.stringify(message.id) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Pure: a stdin line as the text frame it becomes (invalid UTF-8 replaced by
 * U+FFFD), or undefined when that text is over `maxFrameBytes` — each invalid
 * byte grows to three, so a line under the limit can make a frame over it.
 */
export function lineText(line: Uint8Array, maxFrameBytes: number): string | undefined {
  const text = Buffer.from(line.buffer, line.byteOffset, line.length).toString("utf8");
  if (line.length * 3 > maxFrameBytes && Buffer.byteLength(text, "utf8") > maxFrameBytes) return undefined;
  return text;
}

/** Pure: splits buffered stdin bytes into complete lines; the rest stays buffered. Throws nothing; reports an over-long line. */
export function takeLines(buffer: Uint8Array, maxLineBytes: number): { lines: Uint8Array[]; rest: Uint8Array; tooLong: boolean } {
  const lines: Uint8Array[] = [];
  let start = 0;
  for (let i = buffer.indexOf(10, start); i >= 0; i = buffer.indexOf(10, start)) {
    const end = i > start && buffer[i - 1] === 13 ? i - 1 : i;
    if (end - start > maxLineBytes) return { lines, rest: new Uint8Array(0), tooLong: true };
    lines.push(buffer.subarray(start, end));
    start = i + 1;
  }
  const rest = buffer.subarray(start);
  // A CR at the end may be the first half of a CR LF whose LF comes with the next read.
  const restLine = rest.length > 0 && rest[rest.length - 1] === 13 ? rest.length - 1 : rest.length;
  return { lines, rest, tooLong: restLine > maxLineBytes };
}

async function openSocket(socketPath: string): Promise<PausableWebSocket> {
  const ws = new WebSocket(`ws+unix://${socketPath}`) as PausableWebSocket;
  const opened = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(timer);
      resolve(true);
    };
    ws.onerror = ws.onclose = () => {
      clearTimeout(timer);
      resolve(false);
    };
  });
  if (!opened) {
    ws.close();
    throw new BerthError("NOT_RUNNING", `the app-server did not accept a connection on ${socketPath}; check \`berth status\` and \`berth logs\`.`);
  }
  return ws;
}

/** Makes sure the app-server runs (unless `start` is false), connects, and returns the bridge. */
export async function openBridge(ctx: Context, options: { start: boolean }): Promise<Bridge> {
  const terminal = await protocolTerminal();
  // Nothing is asked in a socket folder another user made (their server could answer there as ours):
  // refused (UNSAFE_STATE), or, with start, `start` makes a folder of its own (src/daemon/socket-dir.ts).
  try {
    checkSocketDir(ctx.socket);
  } catch (error) {
    if (!options.start) throw error;
    await startAppServer(ctx);
  }
  // An app-server of ours that answers needs no lock: hundreds of connects must not queue on daemon.lock.
  let probe = await probeInitialize(ctx.socket.path, PROBE_TIMEOUT_MS);
  if (options.start && !isOurServer(ctx, probe)) {
    await startAppServer(ctx);
    probe = await probeInitialize(ctx.socket.path, PROBE_TIMEOUT_MS);
  }
  if (probe.kind !== "absent" && !isOurServer(ctx, probe)) throw foreignServerError(ctx, probe);
  if (!isOurServer(ctx, probe)) {
    const hint = options.start ? "check `berth status` and `berth logs`" : "start it with `berth start`, or run `berth connect` without --no-start";
    throw new BerthError("NOT_RUNNING", `no app-server of ${ctx.layout.home} answers on ${ctx.socket.path}; ${hint}.`);
  }
  const ws = await openSocket(ctx.socket.path);
  return {
    firstLine: {
      status: "connected",
      protocol: BRIDGE_PROTOCOL,
      pid: probe.info.pid,
      appServerVersion: probe.info.serverInfo.version,
      cliVersion: CLI_VERSION,
      socketPath: ctx.socket.path,
    },
    run: () => runBridge(ws, bridgeStdin(terminal), undefined, () => void raiseUnixSendBuffers(ctx.socket.path, UNIX_SEND_BUFFER_BYTES)),
  };
}

let stdoutSink: import("bun").FileSink | undefined;

/**
 * Writes to stdout in order through one FileSink, resolving once flushed.
 * (Awaited Bun.write calls to a slow pipe were seen to lose the tail of a chunk
 * under load in Bun 1.4.5; the sink keeps every byte in order.)
 */
async function writeAllToStdout(lines: string[]): Promise<void> {
  stdoutSink ??= Bun.stdout.writer({ highWaterMark: STDOUT_BATCH_BYTES });
  for (const line of lines) stdoutSink.write(line);
  await stdoutSink.flush();
}

/** Pumps both ways until stdin ends (0), the server closes (75) or a line is too long (65). */
export async function runBridge(
  ws: PausableWebSocket,
  stdin: ReadableStream<Uint8Array> = Bun.stdin.stream(),
  write: (lines: string[]) => Promise<unknown> = writeAllToStdout,
  /** Runs once, the first time a send leaves bytes unsent (openBridge raises the socket's send buffer there, as the server does). */
  onFirstBacklog: () => void = () => {},
): Promise<number> {
  let widen: (() => void) | undefined = onFirstBacklog;
  let finish!: (code: number) => void;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  let closedByUs = false;
  /** Messages (each with its "\n") waiting for stdout, written as they came: no re-encoding or copying here. */
  let outQueue: string[] = [];
  /** Queued output, counted in UTF-16 units (bytes for the ASCII JSON the server sends; a bound either way). */
  let outBytes = 0;
  let writing: Promise<void> = Promise.resolve();
  let paused = false;
  /** Requests sent and not answered yet: at stdin EOF the bridge waits for them before closing. */
  const outstanding = new Set<string>();
  /** Sends one stdin line, remembering it when it is a request (for the wait at EOF). */
  const sendLine = (text: string) => {
    const key = requestKey(text);
    if (key !== undefined && outstanding.size < MAX_TRACKED_REQUESTS) outstanding.add(key);
    ws.send(text);
  };
  /** A stdin line over the frame limit: says so, closes with 1009 and ends with EXIT_LINE_TOO_LONG. */
  const closeTooLong = (message: string) => {
    logger.error(message);
    closedByUs = true;
    ws.close(1009, "line too long");
    finish(EXIT_LINE_TOO_LONG);
  };

  const flushOut = async () => {
    while (outQueue.length > 0) {
      const batch = outQueue;
      outQueue = [];
      let batchBytes = 0;
      for (const line of batch) batchBytes += line.length;
      try {
        await write(batch);
      } catch {
        // stdout is gone (EPIPE): nobody reads any more; end like EOF
        closedByUs = true;
        ws.close(1000);
        finish(EXIT_STDIN_EOF);
        return;
      }
      outBytes -= batchBytes;
      if (paused && outBytes < BRIDGE_LOW_WATER_BYTES) {
        paused = false;
        ws.resume();
      }
    }
  };
  ws.onmessage = (event) => {
    const text = String(event.data);
    if (outstanding.size > 0) {
      const id = replyKey(text);
      if (id !== undefined) outstanding.delete(id);
    }
    outQueue.push(text, "\n"); // not concatenated: that would copy a large message once more
    outBytes += text.length + 1;
    if (!paused && outBytes > BRIDGE_HIGH_WATER_BYTES) {
      paused = true;
      ws.pause();
    }
    if (outQueue.length === 2) writing = writing.then(flushOut);
  };
  /** Ends with `code` once stdout took what waits for it, or once it stopped taking it (STDOUT_DRAIN_GRACE_MS). */
  let draining = false;
  const finishAfterDrain = (code: number) => {
    if (draining) return;
    draining = true;
    const allowance = () => Date.now() + STDOUT_DRAIN_GRACE_MS + Math.ceil((outBytes * 1000) / STDOUT_DRAIN_MIN_BYTES_PER_S);
    let left = outBytes;
    let deadline = allowance();
    const watch = setInterval(() => {
      if (outBytes < left) {
        left = outBytes;
        deadline = allowance();
      } else if (Date.now() >= deadline) {
        clearInterval(watch);
        logger.error(`berth connect: stdout took nothing for ${Math.round(STDOUT_DRAIN_GRACE_MS / 1000)} s and more after the session ended; ${left} bytes not delivered.`);
        finish(code);
      }
    }, STDOUT_DRAIN_POLL_MS);
    void writing.then(() => {
      clearInterval(watch);
      finish(code);
    });
  };
  ws.onclose = () => finishAfterDrain(closedByUs ? EXIT_STDIN_EOF : EXIT_SERVER_CLOSED);
  ws.onerror = () => {};

  void (async () => {
    let pending: Uint8Array = new Uint8Array(0);
    /** Reads after `pending` with no line end in them: joined once the line ends (a 700 KB line in 64 KiB reads is copied once, not per read). */
    let held: Uint8Array[] = [];
    let heldBytes = 0;
    try {
      for await (const chunk of stdin) {
        // Within the limit and no newline: takeLines would find nothing, so only keep it.
        if (chunk.indexOf(10) < 0 && pending.length + heldBytes + chunk.length <= MAX_FRAME_BYTES) {
          held.push(new Uint8Array(chunk));
          heldBytes += chunk.length;
          continue;
        }
        const buffer = pending.length + heldBytes === 0 ? chunk : Buffer.concat([pending, ...held, chunk]);
        held = [];
        heldBytes = 0;
        const { lines, rest, tooLong: restTooLong } = takeLines(buffer, MAX_FRAME_BYTES);
        let tooLong = restTooLong;
        for (const line of lines) {
          if (line.length === 0) continue;
          if (ws.readyState !== WebSocket.OPEN) return;
          const text = lineText(line, MAX_FRAME_BYTES);
          if (text === undefined) {
            tooLong = true;
            break;
          }
          sendLine(text);
          if (widen && ws.bufferedAmount > 0) {
            widen();
            widen = undefined;
          }
        }
        if (tooLong) {
          closeTooLong(`berth connect: a stdin line is longer than ${MAX_FRAME_BYTES} bytes (the frame limit); closing.`);
          return;
        }
        pending = rest.length === 0 ? new Uint8Array(0) : new Uint8Array(rest);
        while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount > BRIDGE_HIGH_WATER_BYTES) await Bun.sleep(SEND_POLL_MS);
      }
    } catch (error) {
      logger.error(`berth connect: reading stdin failed: ${describeError(error)}`);
    }
    if (ws.readyState !== WebSocket.OPEN) return;
    if (heldBytes > 0) pending = Buffer.concat([pending, ...held]);
    // EOF: a last unterminated line still counts as a message.
    if (pending.length > 0) {
      const text = lineText(pending, MAX_FRAME_BYTES);
      if (text === undefined) {
        closeTooLong(`berth connect: the last stdin line is longer than ${MAX_FRAME_BYTES} bytes as UTF-8 text (the frame limit); closing.`);
        return;
      }
      sendLine(text);
    }
    const deadline = Date.now() + CLOSE_WAIT_MS;
    while (outstanding.size > 0 && ws.readyState === WebSocket.OPEN && Date.now() < deadline) await Bun.sleep(SEND_POLL_MS);
    if (ws.readyState !== WebSocket.OPEN) return;
    closedByUs = true;
    ws.close(1000);
    setTimeout(() => finishAfterDrain(EXIT_STDIN_EOF), CLOSE_WAIT_MS);
  })();

  return finished;
}
