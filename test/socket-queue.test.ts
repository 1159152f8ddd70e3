// The local-socket queue of remote forward against a real loopback TCP pair:
// while the reader pauses, what the socket does not take is queued as a copy
// (the caller's buffer is reused for every chunk), and everything arrives in
// order once the reader reads again.
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import type { Socket } from "bun";
import { SocketQueue } from "../src/client/socket-queue.ts";
import { eventually } from "./helpers/berth.ts";

const WAIT_MS = 20_000;
const CHUNK_BYTES = 512 * 1024;
const CHUNKS = 24;

test("bytes pushed from one reused buffer arrive whole and in order after the reader pauses", async () => {
  let reader: Socket<undefined> | undefined;
  let received = 0;
  const hash = createHash("sha256");
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: (socket) => {
        socket.pause();
        reader = socket;
      },
      data: (_s, data) => {
        received += data.length;
        hash.update(data);
      },
    },
  });
  const queue = new SocketQueue();
  const writer = await Bun.connect({ hostname: "127.0.0.1", port: server.port, socket: { data() {}, drain: (socket) => queue.drain(socket) } });
  try {
    expect(await eventually(() => reader !== undefined, WAIT_MS)).toBe(true);
    const reused = Buffer.alloc(CHUNK_BYTES);
    const expected = createHash("sha256");
    let mostQueued = 0;
    for (let i = 0; i < CHUNKS; i++) {
      reused.fill(i + 1); // the owner overwrites its buffer for every chunk
      expected.update(reused);
      mostQueued = Math.max(mostQueued, queue.push(writer, reused));
    }
    // The kernel took only part of 12 MiB from a reader that does not read: the rest was queued.
    expect(mostQueued).toBeGreaterThan(CHUNK_BYTES);
    reader!.resume();
    expect(await eventually(() => received === CHUNKS * CHUNK_BYTES, WAIT_MS)).toBe(true);
    expect(queue.bytes).toBe(0);
    expect(hash.digest("hex")).toBe(expected.digest("hex"));
  } finally {
    writer.end();
    server.stop(true);
  }
});
