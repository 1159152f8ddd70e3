/**
 * `berth remote HOST forward` passes a local client's half-close on, as
 * `ssh -L` does: the client sends its bytes and FIN, the far side (a real TCP
 * server that answers only after EOF) reads them all, then EOF, and its whole
 * answer comes back to the client before the close. A real sshd on loopback,
 * the far side's real app-server, real TCP on both ends.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { BUN, eventually, MAIN } from "./helpers/berth.ts";
import { answerAfterEof, eofAnswerLine, sha256Hex } from "./helpers/eof-server.ts";
import { remoteClientEnv, remoteHosts } from "./helpers/remote-host.ts";
import { freePort, sshdUnavailable } from "./helpers/sshd.ts";
import { writeMore } from "./helpers/tcp-sender.ts";

const reason = sshdUnavailable();
if (reason) console.warn(`SKIPPING forward half-close tests: ${reason}`);
/** ssh, connect and the forward's first line, then the transfer, on a loaded machine. */
const WAIT_MS = 30_000;
const UPLOAD_BYTES = 1024 * 1024;
/** The far side's answer after EOF: more than one tunnel/data frame and the kernel's buffers. */
const ANSWER_BYTES = 2 * 1024 * 1024;

const remote = remoteHosts();
const stops: (() => void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) stop();
  await remote.cleanUp();
});

describe.skipIf(Boolean(reason))("remote forward and half-close", () => {
  test("a local client that sends FIN still gets the far side's whole answer, sent after it read EOF", async () => {
    const host = await remote.newHost();
    const far = answerAfterEof(ANSWER_BYTES);
    stops.push(() => far.listener.stop(true));
    const localPort = freePort();
    const forward = Bun.spawn([BUN, MAIN, "remote", host.alias, "forward", `${localPort}:127.0.0.1:${far.port}`], {
      env: remoteClientEnv(host),
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    remote.track({ kill: () => forward.exitCode === null && forward.kill("SIGKILL") });
    let stdout = "";
    void (async () => {
      for await (const chunk of forward.stdout) stdout += new TextDecoder().decode(chunk);
    })();
    expect(await eventually(() => stdout.includes("\n"), WAIT_MS)).toBe(true);
    expect(JSON.parse(stdout.split("\n")[0] as string)).toMatchObject({ status: "forwarding" });

    const upload = Buffer.alloc(UPLOAD_BYTES);
    for (let i = 0; i < upload.length; i += 1) upload[i] = (i * 13) & 0xff;
    const received: Buffer[] = [];
    let closed = false;
    const progress = { sent: 0 };
    const send = (socket: Socket<undefined>) => {
      if (writeMore(socket, upload, progress)) socket.shutdown(); // FIN: "I have finished sending"; reading goes on
    };
    await Bun.connect({
      hostname: "127.0.0.1",
      port: localPort,
      allowHalfOpen: true,
      socket: {
        open: (socket) => send(socket),
        drain: (socket) => send(socket),
        data: (_socket, data) => void received.push(Buffer.from(data)),
        close: () => void (closed = true),
      },
    });
    expect(await eventually(() => closed, WAIT_MS)).toBe(true);
    const answer = Buffer.concat(received);
    const peer = far.peers[0]!;
    expect(peer.sawEof).toBe(true);
    expect(peer.bytes).toBe(UPLOAD_BYTES);
    expect(answer.subarray(0, answer.indexOf(10) + 1).toString()).toBe(eofAnswerLine(upload));
    expect(answer.length).toBe(peer.answer!.length);
    expect(sha256Hex(answer)).toBe(sha256Hex(peer.answer!));
    forward.kill("SIGINT");
    expect(await forward.exited).toBe(0);
  }, 120_000);
});
