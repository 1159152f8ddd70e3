/**
 * A daemon spawned from a terminal session must not die of that terminal's signals. Until its setsid a
 * detached child is still in berth's process group, the terminal's foreground group: a hangup (a dropped
 * `ssh -tt` running `curl … | sh`) or a ^C in that window killed a just-spawned app-server or keeper (seen
 * under load by test/hangup.test.ts). berth now blocks the terminal's signals around the spawn when it has a
 * controlling terminal, and a daemon discards any that arrived while blocked before it unblocks.
 *
 * Both halves, deterministically: what mask a child of a berth with (and without) a controlling terminal
 * starts with, and a daemon started with SIGHUP and SIGINT blocked and a SIGHUP pending.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, BUN, eventually, pidsKilledPerTest, homesPerTest } from "./helpers/berth.ts";
import { compiledPerFile } from "./helpers/compiled.ts";
import { apiClient, call } from "./helpers/session.ts";
import { maskHas, parseSignalState } from "../src/platform/inherited.ts";

const SIGHUP = 1;
const SIGINT = 2;
const SIGQUIT = 3;
const SIGTSTP = 20;
const WAIT_MS = 20_000;

/**
 * The daemon half runs the compiled binary, as users get it: from source, Bun's transpiler threads (a dynamic
 * import of a .ts file) start with no signal blocked and take a pending one before berth's first line can drop it.
 */
const compiled = compiledPerFile(beforeAll, afterAll, { version: "7.7.8", prefix: "berth-shield-build-" });

const started = pidsKilledPerTest(afterEach);
const newHome = homesPerTest(afterEach);

/** Spawns, as backend.ts does, a child that prints its own SigBlk; `terminal`: the spawner runs on a pseudo-terminal. */
async function childMask(terminal: boolean): Promise<string> {
  const script = `
const { terminalShield } = await import(${JSON.stringify(join(ROOT, "src/platform/inherited.ts"))});
const shield = await terminalShield();
const child = shield(() => Bun.spawn(["grep", "^SigBlk:", "/proc/self/status"], { stdout: "pipe", detached: true }));
process.stderr.write("MASK " + (await new Response(child.stdout).text()));
// The spawner's own mask is back as it was.
process.stderr.write("OWN " + require("node:fs").readFileSync("/proc/self/status", "latin1").match(/^SigBlk:.*$/m)[0] + "\\n");
`;
  let text = "";
  const decoder = new TextDecoder();
  const proc = terminal
    ? Bun.spawn([BUN, "-e", script], { terminal: { cols: 80, rows: 24, data: (_t, data) => (text += decoder.decode(data)) } })
    : Bun.spawn([BUN, "-e", script], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  if (!terminal) text = await new Response(proc.stderr as ReadableStream<Uint8Array>).text();
  expect(await proc.exited).toBe(0);
  return text.replaceAll("\r", "");
}

describe.skipIf(process.platform !== "linux")("the terminal's signals around a daemon's spawn", () => {
  test("with a controlling terminal the child starts with SIGHUP, SIGINT, SIGQUIT and SIGTSTP blocked; the spawner's mask is back", async () => {
    const text = await childMask(true);
    const mask = /MASK SigBlk:\s*([0-9a-f]+)/.exec(text)?.[1];
    expect({ text, mask: mask !== undefined }).toMatchObject({ mask: true });
    for (const signal of [SIGHUP, SIGINT, SIGQUIT, SIGTSTP]) expect({ signal, blocked: maskHas(mask as string, signal) }).toEqual({ signal, blocked: true });
    expect(text).toMatch(/OWN SigBlk:\s*0+\n/);
  }, 30_000);

  test("without one the child starts with nothing blocked", async () => {
    const text = await childMask(false);
    expect(text).toMatch(/MASK SigBlk:\s*0+\n/);
  }, 30_000);

  test("a daemon started with SIGHUP pending and blocked drops it, unblocks, and serves", async () => {
    const home = newHome({ install: false, prefix: "berth-shield-" });
    const socket = home.path("daemon", "app-server.sock");
    // perl: block SIGHUP and SIGINT, send this process a SIGHUP (now pending), exec the daemon.
    const wrapper = ["perl", "-e", "use POSIX; sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGHUP, SIGINT)); kill HUP => $$; exec @ARGV or die"];
    const proc = Bun.spawn([...wrapper, compiled.berth, "serve", "--listen", `unix://${socket}`], { env: home.env, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    started.push(proc.pid);
    const answers = async () => {
      if (proc.exitCode !== null) return true;
      try {
        const ws = await apiClient(socket);
        try {
          return (await call(ws, "initialize", { clientInfo: { name: "shield-test", version: "1" } })).pid === proc.pid;
        } finally {
          ws.destroy();
        }
      } catch {
        return false;
      }
    };
    expect(await eventually(answers, WAIT_MS)).toBe(true);
    // Alive, answering, and nothing blocked any more (the SIGHUP was dropped, not delivered: the server ends on SIGHUP).
    expect({ exitCode: proc.exitCode, stderr: proc.exitCode === null ? "" : await new Response(proc.stderr).text() }).toEqual({ exitCode: null, stderr: "" });
    const state = parseSignalState(readFileSync(`/proc/${proc.pid}/status`, "latin1"));
    expect(state?.blocked).toMatch(/^0+$/);
    // And it still stops on a SIGHUP sent now.
    process.kill(proc.pid, "SIGHUP");
    expect(await eventually(() => proc.exitCode !== null, WAIT_MS)).toBe(true);
  }, 60_000);
});
