/**
 * A real TCP server that answers only after reading EOF, as `wc`, a checksum
 * service or an HTTP/1.0 upload does: `<bytes> <sha256>\n`, then
 * `answerBytes` more (sent as the socket drains), then it closes. It keeps
 * its write side open after the client's FIN (allowHalfOpen). For the
 * half-close tests of tunnel/* and `remote forward`.
 */
import { createHash } from "node:crypto";
import type { Socket, TCPSocketListener } from "bun";
import { writeMore } from "./tcp-sender.ts";

export type EofPeer = { bytes: number; sawEof: boolean; closed: boolean; answer?: Buffer };
type State = EofPeer & { hash: ReturnType<typeof createHash>; sent: number };

export const sha256Hex = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

/** The first line the server sends for `data`. */
export const eofAnswerLine = (data: Uint8Array) => `${data.length} ${sha256Hex(data)}\n`;

/** Listens on 127.0.0.1; `answerBytes` 0 makes a server that never answers (it only records the EOF). */
export function answerAfterEof(answerBytes: number): { listener: TCPSocketListener<State>; port: number; peers: EofPeer[] } {
  const peers: EofPeer[] = [];
  const pump = (socket: Socket<State>) => {
    const peer = socket.data;
    if (peer.answer && writeMore(socket, peer.answer, peer)) socket.end();
  };
  const listener = Bun.listen<State>({
    hostname: "127.0.0.1",
    port: 0,
    allowHalfOpen: true,
    socket: {
      open(socket) {
        socket.data = { bytes: 0, hash: createHash("sha256"), sawEof: false, closed: false, sent: 0 };
        peers.push(socket.data);
      },
      data(socket, data) {
        socket.data.bytes += data.length;
        socket.data.hash.update(data);
      },
      end(socket) {
        const peer = socket.data;
        peer.sawEof = true;
        if (answerBytes === 0) return;
        const body = Buffer.alloc(answerBytes);
        for (let i = 0; i + 4 <= body.length; i += 4) body.writeUInt32LE(i, i);
        peer.answer = Buffer.concat([Buffer.from(`${peer.bytes} ${peer.hash.digest("hex")}\n`), body]);
        pump(socket);
      },
      drain: (socket) => pump(socket),
      close(socket) {
        socket.data.closed = true;
      },
    },
  });
  return { listener, port: listener.port, peers };
}
