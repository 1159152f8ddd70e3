/**
 * Pure reading of the `berth connect` stream: bytes into bounded lines, and
 * what a line before the `connected` line is (the line itself, the remote
 * berth's error object, or shell noise to skip).
 */

/** A line from the bridge longer than this is a broken stream: the connection is dropped. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

export type Connected = { status: "connected"; protocol: number; pid: number; appServerVersion: string; cliVersion: string; socketPath: string };

/**
 * Pure: splits a byte stream into lines, keeping the unfinished tail; throws
 * past the bound. The pieces of an unfinished line are kept apart and joined
 * once its newline comes: a 700 KB tunnel/data line arriving in 64 KiB reads
 * is copied once, not once per read.
 */
export class LineSplitter {
  private pieces: string[] = [];
  private held = 0;
  private readonly decoder = new TextDecoder();
  constructor(private readonly maxBytes = MAX_LINE_BYTES) {}
  push(chunk: Uint8Array): string[] {
    const text = this.decoder.decode(chunk, { stream: true });
    let newline = text.indexOf("\n");
    const lines: string[] = [];
    let from = 0;
    if (newline >= 0) {
      this.pieces.push(text.slice(0, newline));
      lines.push(this.pieces.join(""));
      this.pieces = [];
      this.held = 0;
      from = newline + 1;
      while ((newline = text.indexOf("\n", from)) >= 0) {
        lines.push(text.slice(from, newline));
        from = newline + 1;
      }
    }
    if (from < text.length) {
      this.pieces.push(from === 0 ? text : text.slice(from));
      this.held += text.length - from;
    }
    if (this.held > this.maxBytes) throw new Error(`a line from the host passed ${this.maxBytes} bytes`);
    return lines;
  }
}

/** How every JSON object berth prints begins (`{"status":"connected",…}`, `{"status":"error",…}`). */
const STATUS_OBJECT_START = '{"status":"';

/**
 * Pure: the part of a line from berth's JSON object on, or undefined. A host's
 * start-up files may print without a final newline (a terminal-title escape,
 * `printf` in a .bashrc), so their noise can open the very line berth prints.
 * The last start is taken: inside berth's own JSON a quote is always escaped.
 */
export function statusObjectText(line: string): string | undefined {
  const at = line.lastIndexOf(STATUS_OBJECT_START);
  return at < 0 ? undefined : line.slice(at).trim();
}

/** Pure: is this line the `connected` line, an error object of the remote berth, or noise? */
export function classifyPreamble(line: string): { kind: "connected"; value: Connected } | { kind: "error"; code: string; message: string } | { kind: "noise" } {
  const text = statusObjectText(line);
  if (text === undefined) return { kind: "noise" };
  try {
    const value = JSON.parse(text) as { status?: unknown; error?: { code?: unknown; message?: unknown } };
    if (value.status === "connected" && typeof (value as Connected).pid === "number") return { kind: "connected", value: value as Connected };
    if (value.status === "error" && typeof value.error?.code === "string") {
      return { kind: "error", code: value.error.code, message: String(value.error.message ?? "") };
    }
  } catch {
    // a shell that prints braces
  }
  return { kind: "noise" };
}
