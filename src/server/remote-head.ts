/**
 * The request head of a remote-control connection, before it is let in
 * (remote-front.ts): collected across reads within MAX_HEAD_BYTES, and its one
 * `Authorization` header. Pure; no I/O.
 */

/** A request head larger than this gets 431. */
export const MAX_HEAD_BYTES = 16 * 1024;

const HEAD_END = Buffer.from("\r\n\r\n");

/**
 * Pure: the value of the one `Authorization` header of an HTTP/1.1 request
 * head, or null when there is none, more than one, or it is spelled oddly
 * (a space before the colon, a folded line): anything unusual is refused.
 */
export function authorizationOf(head: string): string | null {
  let found: string | null = null;
  const lines = head.split("\r\n");
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    if (line.startsWith(" ") || line.startsWith("\t")) return null;
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon);
    if (name.toLowerCase().trim() !== "authorization") continue;
    if (name !== name.trim() || found !== null) return null;
    found = line.slice(colon + 1).trim();
  }
  return found;
}

/** A plain reply that ends the connection. */
export function response(status: string, body: string, extra = ""): string {
  return `HTTP/1.1 ${status}\r\ncontent-type: text/plain;charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${extra}\r\n${body}`;
}

export type HeadProgress = { kind: "more" } | { kind: "tooLarge" } | { kind: "complete"; head: string; bytes: Buffer };

/**
 * Collects a head across reads. Only what is new (and the 3 bytes before it)
 * is searched for its end, and the reads are joined once: a head trickled a
 * byte at a time costs linear time. (Joining and searching everything on
 * every read made 16 KiB in 1-byte reads cost ~40 ms of the server's time per
 * connection, 64 of them at once.)
 */
export class HeadReader {
  private chunks: Buffer[] = [];
  private bytes = 0;
  /** The last bytes read, for an end split across reads. */
  private tail = Buffer.alloc(0);

  constructor(private readonly maxBytes = MAX_HEAD_BYTES) {}

  /** Adds one read (copied); `complete` gives the head's text and every byte read so far (the head and what followed). */
  push(data: Uint8Array): HeadProgress {
    const before = this.bytes;
    const chunk = Buffer.from(data);
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    const window = this.tail.length > 0 ? Buffer.concat([this.tail, chunk]) : chunk;
    const at = window.indexOf(HEAD_END);
    if (at < 0) {
      if (this.bytes > this.maxBytes) return { kind: "tooLarge" };
      this.tail = Buffer.from(window.subarray(Math.max(0, window.length - (HEAD_END.length - 1))));
      return { kind: "more" };
    }
    const end = before - this.tail.length + at + HEAD_END.length;
    if (end > this.maxBytes) return { kind: "tooLarge" };
    const bytes = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks);
    this.chunks = [];
    return { kind: "complete", head: bytes.subarray(0, end - HEAD_END.length).toString("latin1"), bytes };
  }
}
