/**
 * Test helper: a loopback TCP server that sends `payload` to the first peer
 * that connects, honouring backpressure (drain), then optionally ends.
 */
import type { Socket } from "bun";

/** Writes `payload` from `progress.sent` on as far as the socket takes it (call again on drain); true once all of it is written. */
export function writeMore(socket: Socket<any>, payload: Uint8Array, progress: { sent: number }): boolean {
  while (progress.sent < payload.length) {
    const written = socket.write(payload.subarray(progress.sent));
    if (written <= 0) return false;
    progress.sent += written;
  }
  return true;
}

export function tcpSender(payload: Uint8Array, options: { end?: boolean } = {}) {
  const progress = { sent: 0 };
  const pump = (socket: Socket<undefined>) => {
    if (writeMore(socket, payload, progress) && options.end) socket.end();
  };
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: pump, drain: pump, data() {} } });
  return { port: listener.port, sent: () => progress.sent, stop: () => listener.stop(true) };
}
