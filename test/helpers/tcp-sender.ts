/**
 * Test helper: a loopback TCP server that sends `payload` to the first peer
 * that connects, honouring backpressure (drain), then optionally ends.
 */
import type { Socket } from "bun";

export function tcpSender(payload: Uint8Array, options: { end?: boolean } = {}) {
  let sent = 0;
  const pump = (socket: Socket<undefined>) => {
    while (sent < payload.length) {
      const written = socket.write(payload.subarray(sent));
      if (written <= 0) return;
      sent += written;
    }
    if (options.end) socket.end();
  };
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: pump, drain: pump, data() {} } });
  return { port: listener.port, sent: () => sent, stop: () => listener.stop(true) };
}
