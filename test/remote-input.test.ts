/**
 * Input to a remote process through `berth remote` and src/client, against a
 * real sshd on loopback and the far side's real app-server: a paste larger
 * than the host's bound on unread input (4 MiB) into a process that does not
 * read it yet arrives whole and in order, and a process that never reads
 * makes the follower give up loudly, never drop bytes silently; a paste
 * made while the connection is down waits for the reconnect, all of it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../src/client/connection.ts";
import { followProcess, type RemoteProcess } from "../src/client/follow.ts";
import { INPUT_QUEUE_MAX_BYTES } from "../src/client/input.ts";
import { eventually } from "./helpers/berth.ts";
import { remoteClientEnv, remoteHosts, withConnection } from "./helpers/remote-host.ts";
import { connectSshUnder, sshdUnavailable } from "./helpers/sshd.ts";

const MIB = 1024 * 1024;
/** The far side takes several MiB through ssh, a pty and `cat`: generous, under load too. */
const ARRIVE_WAIT_MS = 60_000;
/** The client tells the user after INPUT_STALL_NOTICE_MS (5 s) of refusals; first 4 MiB must reach the host. */
const NOTICE_WAIT_MS = 45_000;
const reason = sshdUnavailable();
if (reason) console.warn(`SKIPPING remote input tests: ${reason}`);

const remote = remoteHosts();
afterEach(() => remote.cleanUp());

const sha256 = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex");

/** Printable lines (base64 of random bytes, 76 a line): nothing a terminal would act on, in raw mode or not. */
function pasteText(rawBytes: number): string {
  return (randomBytes(rawBytes).toString("base64").match(/.{1,76}/g) as string[]).join("\n") + "\n";
}

/**
 * A terminal process that takes its input raw, says `ready`, stops itself (reading nothing) until SIGCONT, then
 * copies its input to `file`.
 */
function stoppedReader(file: string): string[] {
  return ["sh", "-c", `stty raw -echo; echo ready; kill -STOP $$; exec cat > '${file}'`];
}

const fileSize = (file: string) => (existsSync(file) ? statSync(file).size : 0);

describe.skipIf(Boolean(reason))("input refused while the remote process does not read it", () => {
  test("a paste of 8 MiB into a terminal process that reads nothing yet is held, not dropped: every byte arrives, in order", async () => {
    const host = await remote.newHost();
    const file = join(host.farTmp, "pasted");
    const spawned = await withConnection(host, (conn) =>
      conn.call<{ process: RemoteProcess }>("process/spawn", { name: "slow-reader", terminal: { cols: 80, rows: 24 }, argv: stoppedReader(file) }),
    );
    const client = remote.ptyClient(host, ["attach", "slow-reader"], { BERTH_DETACH_KEY: "none" });
    expect(await client.waitFor("ready")).toBe(true);
    const text = pasteText(6 * MIB);
    const mark = client.output.length;
    client.type(text);
    // Over the host's 4 MiB of unread input the writes are refused: the client holds the rest and says so.
    expect(await client.waitFor("has not read its input", NOTICE_WAIT_MS, mark)).toBe(true);
    expect(client.output.slice(mark)).toMatch(/slow-reader has not read its input for \d+ s; \d+ bytes of yours are held, in order/);
    await withConnection(host, (conn) => conn.call("process/signal", { processId: spawned.process.processId, signal: "SIGCONT" }));
    expect(await eventually(() => fileSize(file) >= text.length, ARRIVE_WAIT_MS)).toBe(true);
    expect(fileSize(file)).toBe(text.length);
    expect(sha256(readFileSync(file))).toBe(sha256(text));
    expect(await client.waitFor("reads its input again", NOTICE_WAIT_MS, mark)).toBe(true);
    await withConnection(host, (conn) => conn.call("process/signal", { processId: spawned.process.processId, signal: "SIGKILL" }));
    expect(await client.waitFor("client-exit=137", NOTICE_WAIT_MS, mark)).toBe(true);
  }, 180_000);

  test("a process that reads nothing past the deadline: the follower detaches, says how much was not delivered, and what was delivered is an in-order prefix", async () => {
    const host = await remote.newHost();
    const file = join(host.farTmp, "prefix");
    let output = "";
    const follower = remote.trackFollower(
      await followProcess({
        open: () => connect(host.alias, { env: remoteClientEnv(host) }),
        first: async (conn) =>
          (await conn.call<{ process: RemoteProcess }>("process/spawn", { name: "never-reads", terminal: { cols: 80, rows: 24 }, argv: stoppedReader(file) })).process,
        onOutput: (_stream, data) => void (output += new TextDecoder().decode(data)),
        inputLimits: { stallNoticeMs: 1_000, stallMaxMs: 3_000, queueMaxBytes: INPUT_QUEUE_MAX_BYTES },
      }),
    );
    expect(await eventually(() => output.includes("ready"), 20_000)).toBe(true);
    const text = new TextEncoder().encode(pasteText(6 * MIB));
    // Written as a terminal would read it: 64 KiB at a time, pausing whenever the follower says so.
    let offered = 0;
    while (offered < text.length && !follower.finished) {
      const hold = follower.write(text.subarray(offered, offered + 64 * 1024));
      offered = Math.min(text.length, offered + 64 * 1024);
      if (hold) await hold;
    }
    const ended = await follower.done;
    expect(ended.kind).toBe("inputRefused");
    const said = (ended as { reason: string }).reason;
    const delivered = Number(/\((\d+) were\)/.exec(said)?.[1]);
    const undelivered = Number(/; (\d+) bytes of input were not delivered/.exec(said)?.[1]);
    expect(said).toContain("never-reads has read none of its input");
    expect(said).toContain("attach never-reads");
    expect(delivered).toBeGreaterThan(0);
    expect(undelivered).toBeGreaterThan(0);
    // Everything offered is accounted for: delivered, or said to be undelivered.
    expect(delivered + undelivered).toBe(offered);
    // The process keeps running; once it reads, it gets exactly the delivered prefix, in order.
    const list = await withConnection(host, async (conn) => {
      const { processes } = await conn.call<{ processes: RemoteProcess[] }>("process/list", {});
      const found = processes.find((p) => p.name === "never-reads") as RemoteProcess;
      await conn.call("process/signal", { processId: found.processId, signal: "SIGCONT" });
      return processes;
    });
    expect(list.find((p) => p.name === "never-reads")?.state).toBe("running");
    expect(await eventually(() => fileSize(file) >= delivered, ARRIVE_WAIT_MS)).toBe(true);
    expect(sha256(readFileSync(file))).toBe(sha256(text.subarray(0, delivered)));
    await withConnection(host, async (conn) => {
      const { processes } = await conn.call<{ processes: RemoteProcess[] }>("process/list", {});
      await conn.call("process/signal", { processId: processes.find((p) => p.name === "never-reads")?.processId, signal: "SIGKILL" });
    });
  }, 180_000);
});

describe.skipIf(Boolean(reason))("the detach key while input is held", () => {
  test("typed behind input the process does not take, it still detaches at once (exit 0) and names what was not delivered", async () => {
    const host = await remote.newHost();
    const spawned = await withConnection(host, (conn) =>
      conn.call<{ process: RemoteProcess }>("process/spawn", { name: "stuck", terminal: { cols: 80, rows: 24 }, argv: stoppedReader(join(host.farTmp, "stuck")) }),
    );
    const client = remote.ptyClient(host, ["attach", "stuck"]);
    expect(await client.waitFor("ready")).toBe(true);
    const mark = client.output.length;
    // ~5.4 MiB: more than the host (4 MiB) and the client's queue (1 MiB) take, so the rest waits for the refusals to end.
    client.type(pasteText(4 * MIB));
    expect(await client.waitFor("has not read its input", NOTICE_WAIT_MS, mark)).toBe(true);
    client.type("\x1c");
    // Before, the key waited behind the held paste until the give-up (60 s, exit 1).
    expect(await client.waitFor("client-exit=", 30_000, mark)).toBe(true);
    const said = client.output.slice(mark);
    expect(said).toContain("client-exit=0");
    expect(said).toMatch(/\d+ bytes of input were not delivered/);
    expect(said).toContain("detached; `berth remote");
    await withConnection(host, async (conn) => {
      const { processes } = await conn.call<{ processes: RemoteProcess[] }>("process/list", {});
      expect(processes.find((p) => p.processId === spawned.process.processId)?.state).toBe("running");
      await conn.call("process/signal", { processId: spawned.process.processId, signal: "SIGKILL" });
    });
  }, 180_000);
});

describe.skipIf(Boolean(reason))("a process that reads its input slowly", () => {
  test("is never given up on while it takes bytes, however few: the give-up is for taking none", async () => {
    const host = await remote.newHost();
    const file = join(host.farTmp, "trickle");
    let output = "";
    // ~1 KB/s: its 4 MiB backlog takes it over an hour; the kernel gives the pty room back ~2 KiB at a time.
    const reader = `stty raw -echo; echo ready; while :; do head -c 512 >> '${file}'; sleep 0.5; done`;
    const follower = await followProcess({
      open: () => connect(host.alias, { env: remoteClientEnv(host) }),
      first: async (conn) => (await conn.call<{ process: RemoteProcess }>("process/spawn", { name: "trickle", terminal: { cols: 80, rows: 24 }, argv: ["sh", "-c", reader] })).process,
      onOutput: (_stream, data) => void (output += new TextDecoder().decode(data)),
      onNotice: (text) => void (output += `\n${text}\n`),
      // The give-up shortened, still several times the ~2 s the reader takes to make room under load.
      inputLimits: { stallNoticeMs: 1_000, stallMaxMs: 10_000, queueMaxBytes: INPUT_QUEUE_MAX_BYTES },
    });
    try {
      expect(await eventually(() => output.includes("ready"), 20_000)).toBe(true);
      // Past the host's 4 MiB of unread input: its writes are refused from then on, but for what the reader takes.
      const text = new TextEncoder().encode(pasteText(5 * MIB));
      const held = eventually(() => output.includes("has not read its input"), NOTICE_WAIT_MS);
      let noticed = false;
      for (let offered = 0; offered < text.length && !noticed && !follower.finished; offered += 64 * 1024) {
        const hold = follower.write(text.subarray(offered, offered + 64 * 1024));
        if (hold) noticed = await Promise.race([hold.then(() => false), follower.done.then(() => false), held]);
      }
      expect(await held).toBe(true);
      expect(follower.finished).toBe(false);
      const taken = fileSize(file);
      // Give-up deadlines pass with the reader taking a trickle: the follower stays.
      expect(await eventually(() => follower.finished, 25_000)).toBe(false);
      expect(fileSize(file)).toBeGreaterThan(taken);
      expect(output).not.toContain("has read none of its input");
    } finally {
      const processId = follower.process.processId;
      await follower.detach();
      await withConnection(host, (conn) => conn.call("process/signal", { processId, signal: "SIGKILL" }));
    }
  }, 180_000);
});

describe.skipIf(Boolean(reason))("input typed while the connection is down", () => {
  test("a 2 MiB paste while the host cannot be reached waits in the client (reading held) and arrives whole after the reconnect", async () => {
    const host = await remote.newHost();
    const file = join(host.farTmp, "offline");
    await withConnection(host, (conn) =>
      conn.call("process/spawn", { name: "reader", terminal: { cols: 80, rows: 24 }, argv: ["sh", "-c", `stty raw -echo; echo ready; exec cat > '${file}'`] }),
    );
    const client = remote.ptyClient(host, ["attach", "reader"], { BERTH_DETACH_KEY: "none" });
    expect(await client.waitFor("ready")).toBe(true);
    let sshdStopped = false;
    try {
      // sshd frozen: the reconnect hangs at its banner until the test lets it go on.
      process.kill(host.sshdPid, "SIGSTOP");
      sshdStopped = true;
      const ssh = connectSshUnder(client.pid);
      expect(ssh).toBeDefined();
      const mark = client.output.length;
      process.kill(ssh as number, "SIGKILL");
      expect(await client.waitFor("reconnecting", NOTICE_WAIT_MS, mark)).toBe(true);
      // Before: 64 KiB typed offline were kept, the rest dropped without a word.
      const text = pasteText(3 * MIB / 2);
      client.type(text);
      process.kill(host.sshdPid, "SIGCONT");
      sshdStopped = false;
      expect(await client.waitFor("reconnected", ARRIVE_WAIT_MS, mark)).toBe(true);
      expect(await eventually(() => fileSize(file) >= text.length, ARRIVE_WAIT_MS)).toBe(true);
      expect(fileSize(file)).toBe(text.length);
      expect(sha256(readFileSync(file))).toBe(sha256(text));
      expect(client.output.slice(mark)).not.toContain("not delivered");
    } finally {
      if (sshdStopped) process.kill(host.sshdPid, "SIGCONT");
    }
  }, 180_000);
});
