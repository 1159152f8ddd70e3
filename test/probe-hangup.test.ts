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
import { join } from "node:path";
import { acceptedThenHungUp, probeInitialize, socketAcceptsConnections } from "../src/server/client.ts";
import { BUN, isAlive, pidsKilledPerTest, tempDirsPerTest } from "./helpers/berth.ts";

const newDir = tempDirsPerTest(afterEach, "berth-hangup-");
const killAfter = pidsKilledPerTest(afterEach);
/** The listener is up within this long. */
const LISTEN_WAIT_MS = 20_000;
/** How long this process is busy after it connects: long enough for the listener to accept and hang up. */
const BUSY_MS = 300;
const PROBE_TIMEOUT_MS = 3_000;

const HANG_UP_AT_ONCE = `
const path = process.argv[1];
Bun.listen({ unix: path, socket: { open(socket) { socket.end(); }, data() {} } });
console.log("ready");
`;

async function hangingUpListener(path: string): Promise<{ pid: number; exited: Promise<number> }> {
  const child = Bun.spawn([BUN, "-e", HANG_UP_AT_ONCE, path], { stdout: "pipe", stderr: "inherit" });
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
    const path = join(newDir(), "s.sock");
    const { pid } = await hangingUpListener(path);
    for (let i = 0; i < 3; i += 1) {
      const answer = socketAcceptsConnections(path, PROBE_TIMEOUT_MS);
      Bun.sleepSync(BUSY_MS);
      expect(await answer).toBe(true);
    }
    expect(isAlive(pid)).toBe(true);
  }, 60_000);

  test("a socket nobody listens on any more is still nothing", async () => {
    const path = join(newDir(), "s.sock");
    const listener = await hangingUpListener(path);
    process.kill(listener.pid, "SIGKILL");
    await listener.exited;
    const answer = socketAcceptsConnections(path, PROBE_TIMEOUT_MS);
    Bun.sleepSync(BUSY_MS);
    expect(await answer).toBe(false);
    expect((await probeInitialize(path, PROBE_TIMEOUT_MS)).kind).toBe("absent");
  }, 60_000);
});
