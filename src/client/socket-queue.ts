/**
 * Bytes on their way into one local socket (remote forward): written at once
 * while nothing waits, otherwise queued until the socket drains. What is
 * queued is a copy, so a caller may hand in a buffer it reuses (the reused
 * base64 decode buffer of tunnel/data).
 */

/** What the queue needs of a socket: Bun's write, which takes what it can and returns how much (negative once closed). */
export type Writable = { write(data: Uint8Array): number };

export class SocketQueue {
  private readonly chunks: Uint8Array[] = [];
  /** Bytes queued, not yet taken by the socket. */
  bytes = 0;

  /** Writes `data`, or what the socket does not take, behind what waits; returns the bytes now queued. */
  push(socket: Writable, data: Uint8Array): number {
    if (this.chunks.length === 0) {
      const written = Math.max(0, socket.write(data));
      if (written >= data.length) return this.bytes;
      data = data.subarray(written);
    }
    this.chunks.push(new Uint8Array(data)); // a copy: `data` may be overwritten by its owner
    this.bytes += data.length;
    return this.bytes;
  }

  /** The socket drained: writes what it takes now. */
  drain(socket: Writable): void {
    while (this.chunks.length > 0) {
      const chunk = this.chunks[0] as Uint8Array;
      const written = Math.max(0, socket.write(chunk));
      this.bytes -= written;
      if (written < chunk.length) {
        this.chunks[0] = chunk.subarray(written);
        return;
      }
      this.chunks.shift();
    }
  }
}
