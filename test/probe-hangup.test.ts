/**
 * Is anything listening on the control socket? A listener that accepts and
 * hangs up at once is something (not a berth app-server, and not a leftover
 * socket that `stop` and `start` may remove). Bun reports such a connection as
 * a connect error (ECONNRESET) when the hang-up arrives before this process's
 * loop looks, which a busy or loaded process makes likely: it was read as
 * "nothing answers", and status said stopped. The listener runs in its own
 * process, as a real squatter would, so that it can answer while this one is busy.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { acceptedThenHungUp, probeInitialize, socketAcceptsConnections } from "../src/server/client.ts";
import { BUN, isAlive, pidsKilledPerTest, tempDirsPerTest } from "./helpers/berth.ts";

const newDir = tempDirsPerTest(afterEach, "berth-hangup-");
const killAfter = pidsKilledPerTest(afterEach);
/** The listener is up within this long. */
const LISTEN_WAIT_MS = 20_000;
const PROBE_TIMEOUT_MS = 3_000;
/** Between two looks, while this process stays busy (blocked) until the listener has hung up. */
const HANG_UP_POLL_MS = 5;

/** Accepts, hangs up, then adds a line to the file it is given: how many it has hung up on. */
const HANG_UP_AT_ONCE = `
const [path, log] = process.argv.slice(1);
const { appendFileSync } = require("node:fs");
Bun.listen({ unix: path, socket: { open(socket) { socket.end(); appendFileSync(log, "x\\n"); }, data() {} } });
console.log("ready");
`;

/**
 * Keeps this process busy (its event loop blocked, as a loaded or stopped one is) until the listener has hung up
 * on `count` connections in all, within LISTEN_WAIT_MS.
 */
function busyUntilHungUp(log: string, count: number): void {
  const deadline = performance.now() + LISTEN_WAIT_MS;
  const hungUp = () => (existsSync(log) ? readFileSync(log, "utf8").split("\n").length - 1 : 0);
  while (hungUp() < count) {
    if (performance.now() >= deadline) throw new Error(`the listener hung up on ${hungUp()} of ${count} connections within ${LISTEN_WAIT_MS} ms`);
    Bun.sleepSync(HANG_UP_POLL_MS);
  }
}

async function hangingUpListener(path: string, log: string): Promise<{ pid: number; exited: Promise<number> }> {
  const child = Bun.spawn([BUN, "-e", HANG_UP_AT_ONCE, path, log], { stdout: "pipe", stderr: "inherit" });
  killAfter.push(child.pid);
  const reader = child.stdout.getReader();
  const ready = await Promise.race([reader.read(), Bun.sleep(LISTEN_WAIT_MS).then(() => undefined)]);
  expect(new TextDecoder().decode(ready?.value)).toContain("ready");
  return child;
}

describe("acceptedThenHungUp", () => {
  const cases: [string, unknown, boolean][] = [
    ["ECONNRESET: accepted, then hung up", { code: "ECONNRESET" }, true],
    ["ECONNREFUSED: nobody listens", { code: "ECONNREFUSED" }, false],
    ["ENOENT: no socket", { code: "ENOENT" }, false],
    ["an error without a code", new Error("Failed to connect"), false],
    ["null", null, false],
    ["undefined", undefined, false],
  ];
  for (const [name, error, expected] of cases) test(name, () => expect(acceptedThenHungUp(error)).toBe(expected));
});

describe("a listener that accepts and hangs up at once is something listening", () => {
  test("socketAcceptsConnections says so even when this process was busy while it hung up", async () => {
    const dir = newDir();
    const path = join(dir, "s.sock");
    const log = join(dir, "hung-up");
    const { pid } = await hangingUpListener(path, log);
    for (let i = 1; i <= 3; i += 1) {
      const answer = socketAcceptsConnections(path, PROBE_TIMEOUT_MS);
      busyUntilHungUp(log, i);
      expect(await answer).toBe(true);
    }
    expect(isAlive(pid)).toBe(true);
  }, 60_000);

  test("a socket nobody listens on any more is still nothing", async () => {
    const dir = newDir();
    const path = join(dir, "s.sock");
    const listener = await hangingUpListener(path, join(dir, "hung-up"));
    process.kill(listener.pid, "SIGKILL");
    await listener.exited;
    expect(await socketAcceptsConnections(path, PROBE_TIMEOUT_MS)).toBe(false);
    expect((await probeInitialize(path, PROBE_TIMEOUT_MS)).kind).toBe("absent");
  }, 60_000);
});
