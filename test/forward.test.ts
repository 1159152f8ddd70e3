/**
 * `berth remote HOST forward` against a scripted host (test/fixtures/scripted-host.ts
 * as BERTH_SSH): what the host sends, and how it is cut into reads, is fixed,
 * so orderings a real sshd produces only sometimes happen every time.
 */
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { BUN, eventually, MAIN } from "./helpers/berth.ts";
import { freePort } from "./helpers/sshd.ts";

const SCRIPTED_HOST = join(import.meta.dir, "fixtures", "scripted-host.ts");
const started: Array<ReturnType<typeof Bun.spawn>> = [];

afterEach(() => {
  for (const proc of started.splice(0)) if (proc.exitCode === null) proc.kill("SIGKILL");
});

/** `berth remote scripted forward PORT:127.0.0.1:1` with the scripted host; resolves once it listens. */
async function scriptedForward(env: Record<string, string>) {
  const localPort = freePort();
  const proc = Bun.spawn([BUN, MAIN, "remote", "scripted", "forward", `${localPort}:127.0.0.1:1`], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1", BERTH_SSH: `${BUN} ${SCRIPTED_HOST}`, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  started.push(proc);
  const out = { stdout: "" };
  void (async () => {
    for await (const chunk of proc.stdout) out.stdout += new TextDecoder().decode(chunk);
  })();
  expect(await eventually(() => out.stdout.includes("\n"), 30_000)).toBe(true);
  return { proc, localPort, out };
}

/** A local client of the forward: what it received and whether the forward ended it. */
async function localClient(port: number) {
  const seen = { text: "", closed: false };
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: { data: (_s, d) => void (seen.text += d.toString()), close: () => void (seen.closed = true) },
  });
  return { socket, seen };
}

test("a far side that speaks first: its first bytes and its close, read together with the tunnel/open reply, reach the local client", async () => {
  const { proc, localPort } = await scriptedForward({ SCRIPTED_GREETING: "SSH-2.0-far\r\n", SCRIPTED_CLOSE: "1" });
  for (let i = 0; i < 3; i += 1) {
    const { socket, seen } = await localClient(localPort);
    // Before: the tunnel/data and tunnel/closed behind the reply were handled before the forward knew the tunnel: lost.
    expect(await eventually(() => seen.closed, 10_000)).toBe(true);
    expect(seen.text).toBe("SSH-2.0-far\r\n");
    socket.end();
  }
  proc.kill("SIGINT");
  expect(await proc.exited).toBe(0);
}, 60_000);
