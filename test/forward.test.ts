/**
 * `berth remote HOST forward` against a scripted host (test/fixtures/scripted-host.ts
 * as BERTH_SSH): what the host sends, and how it is cut into reads, is fixed,
 * so orderings a real sshd produces only sometimes happen every time.
 */
import { afterEach, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { argvOf, BUN, eventually, MAIN, tempDirsPerTest } from "./helpers/berth.ts";
import { descendantsOf, freePort } from "./helpers/sshd.ts";

const SCRIPTED_HOST = join(import.meta.dir, "fixtures", "scripted-host.ts");
const started: Array<ReturnType<typeof Bun.spawn>> = [];
afterEach(() => {
  for (const proc of started.splice(0)) if (proc.exitCode === null) proc.kill("SIGKILL");
});
const tempDir = tempDirsPerTest(afterEach, "berth-forward-");

/** The scripted host (our "ssh") under a forward process. */
function scriptedHostUnder(root: number): number | undefined {
  return descendantsOf(root).find((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("scripted-host.ts");
    } catch {
      return false;
    }
  });
}

/** A forward whose host then becomes unreachable: its connection is dropped and every reconnect hangs until `up()`. */
async function forwardInOutage() {
  const dir = tempDir();
  const down = join(dir, "down");
  const tally = join(dir, "tally");
  const forward = await scriptedForward({ SCRIPTED_DOWN: down, SCRIPTED_TALLY: tally });
  writeFileSync(down, "");
  process.kill(scriptedHostUnder(forward.proc.pid) as number, "SIGKILL");
  expect(await eventually(() => forward.out.stderr.includes("reconnecting"), 20_000)).toBe(true);
  const written = () => {
    try {
      return Number(readFileSync(tally, "utf8"));
    } catch {
      return 0;
    }
  };
  return { ...forward, up: () => rmSync(down), written };
}

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
  const out = { stdout: "", stderr: "" };
  for (const key of ["stdout", "stderr"] as const) {
    void (async () => {
      for await (const chunk of proc[key]) out[key] += new TextDecoder().decode(chunk);
    })();
  }
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
    expect(await eventually(() => seen.closed, 20_000)).toBe(true);
    expect(seen.text).toBe("SSH-2.0-far\r\n");
    socket.end();
  }
  proc.kill("SIGINT");
  expect(await proc.exited).toBe(0);
}, 60_000);

test("a tunnel/write the host refuses resets the local client, saying so: the bytes after a lost one must not reach the far side", async () => {
  const { proc, localPort, out } = await scriptedForward({ SCRIPTED_GREETING: "hello\n", SCRIPTED_REFUSE_WRITES: "1" });
  const { socket, seen } = await localClient(localPort);
  expect(await eventually(() => seen.text === "hello\n", 20_000)).toBe(true);
  socket.write("refused by the host");
  // Before: the refusal was ignored and the client went on, its stream silently missing those bytes.
  expect(await eventually(() => seen.closed, 20_000)).toBe(true);
  proc.kill("SIGINT");
  expect(await proc.exited).toBe(0);
  expect(await eventually(() => out.stderr.includes("was reset: scripted refused its bytes (queue full)"), 20_000)).toBe(true);
}, 60_000);

test("SIGINT while local connections wait out an outage: forward ends them and exits at once with 0 and its one JSON line", async () => {
  const { proc, localPort, out } = await forwardInOutage();
  const clients = await Promise.all([1, 2, 3].map(() => localClient(localPort)));
  clients[0]?.socket.write("waiting for a tunnel");
  // A reconnect attempt is under way (its "ssh" hangs) when the signal comes.
  expect(await eventually(() => scriptedHostUnder(proc.pid) !== undefined, 20_000)).toBe(true);
  proc.kill("SIGINT");
  let code: number | undefined;
  void proc.exited.then((c) => (code = c));
  // "At once": not after the outage (which lasts until the test ends it); 15 s is for a loaded machine.
  expect(await eventually(() => code !== undefined, 15_000)).toBe(true);
  expect(code).toBe(0);
  expect(await eventually(() => clients.every((c) => c.seen.closed), 15_000)).toBe(true);
  expect(out.stdout.trim().split("\n")).toHaveLength(1);
  expect(out.stderr).not.toContain("refused");
}, 60_000);

test("ssh's stderr held open by a process it leaves behind (as a ProxyCommand shares it) does not hide its end: forward reconnects", async () => {
  const holderFile = join(tempDir(), "holder");
  const { proc, localPort, out } = await scriptedForward({ SCRIPTED_STDERR_HOLDER: holderFile, SCRIPTED_GREETING: "hi\n" });
  const holder = Number(readFileSync(holderFile, "utf8"));
  try {
    process.kill(scriptedHostUnder(proc.pid) as number, "SIGKILL");
    // Before: the connection ended only once ssh's stderr did, which the holder never lets happen: no reconnect, ever.
    expect(await eventually(() => out.stderr.includes("reconnected"), 20_000)).toBe(true);
    const { socket, seen } = await localClient(localPort);
    expect(await eventually(() => seen.text === "hi\n", 20_000)).toBe(true);
    socket.end();
    proc.kill("SIGINT");
    expect(await proc.exited).toBe(0);
  } finally {
    // Ours: the sleep the fixture started (reparented once the scripted host died).
    if (argvOf(holder).join(" ").trim() === "sleep 600") process.kill(holder, "SIGKILL");
  }
}, 60_000);

/** Bytes the kernel holds on the loopback connections to `port`: unread by its listener's side, unsent by the other (/proc/net/tcp). */
function kernelQueuedBytes(port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  let queued = 0;
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const [, local, remote, , queues] = line.trim().split(/\s+/);
    const [tx, rx] = (queues ?? "0:0").split(":").map((hex) => Number.parseInt(hex, 16));
    if (local?.endsWith(`:${hexPort}`)) queued += rx ?? 0; // the forward's side: not yet read by it
    else if (remote?.endsWith(`:${hexPort}`)) queued += tx ?? 0; // the client's side: not yet sent
  }
  return queued;
}

test("many local clients sending during an outage: what the forward holds for them all is bounded, and all of it arrives after the reconnect", async () => {
  const { localPort, out, up, written } = await forwardInOutage();
  const CLIENTS = 40;
  const chunk = new Uint8Array(1200 * 1024).fill(0x61);
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => localClient(localPort)));
  for (const { socket } of clients) expect(socket.write(chunk)).toBe(chunk.length);
  // What the clients sent and the kernel does not hold, the forward read and holds. Each client alone stays under
  // LOCAL_PENDING_MAX_BYTES' pause until past 1 MiB: before, together they had the forward hold ~45 of their 47 MiB.
  // Now 8 MiB, plus what a client already reading delivers before its pause (a read or two each: ~16 MiB measured).
  const held = () => CLIENTS * chunk.length - kernelQueuedBytes(localPort);
  let most = 0;
  expect(
    await eventually(() => {
      most = Math.max(most, held());
      return most > 36 * 1024 * 1024;
    }, 3_000, 50),
  ).toBe(false);
  up();
  // Reconnected: every tunnel opens and the forward reads the rest (the scripted host answers each write).
  expect(await eventually(() => out.stderr.includes("reconnected"), 30_000)).toBe(true);
  expect(await eventually(() => written() === CLIENTS * chunk.length, 30_000)).toBe(true);
  expect(clients.every((c) => !c.seen.closed)).toBe(true);
}, 60_000);
