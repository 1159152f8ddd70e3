// Daemons that escape: a session process that double-forks and calls setsid leaves its group and, once the middle
// process exits, the app-server's tree. The real app-server (`berth start`) is their child subreaper: they are
// re-parented to it, `stop` ends them, their exits are reaped (no zombie), and Bun's own children still report
// their exit codes. Real processes, read from /proc.
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { eventually, isAlive } from "./helpers/berth.ts";
import { CONNECT_WAIT_MS, connectFixtures, type ConnectClient } from "./helpers/connect.ts";
import { childrenOfSelf } from "../src/server/process/orphans.ts";
import { parseLedger } from "../src/server/process/ledger.ts";
import { processIdentity } from "../src/platform/process.ts";

const TEST_TIMEOUT_MS = 90_000;
/** Processes started at once by the burst test, each leaving an orphan that exits at once. */
const BURST = 40;
const fixtures = connectFixtures("berth-orphans-");

async function connected() {
  const home = fixtures.home({ stopGraceMs: 3_000 });
  const bridge = fixtures.connect(home);
  await bridge.waitConnected();
  await bridge.initialize();
  return { home, bridge, serverPid: bridge.connected.pid as number };
}

/** /proc/<pid>/stat: state and parent pid, or undefined once the pid is gone (reaped). */
function statOf(pid: number): { state: string; ppid: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "latin1");
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { state: fields[0] as string, ppid: Number(fields[1]) };
  } catch {
    return undefined;
  }
}

/** Zombies whose parent is `pid` (an orphan may be re-parented to any of its threads). */
function zombieChildrenOf(pid: number): number[] {
  const zombies: number[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    for (const child of readFileSync(`/proc/${pid}/task/${tid}/children`, "latin1").split(" ").filter(Boolean)) {
      if (statOf(Number(child))?.state === "Z") zombies.push(Number(child));
    }
  }
  return zombies;
}

async function exitOf(bridge: ConnectClient, processId: string): Promise<any> {
  let exited: any;
  await eventually(() => (exited = bridge.messages().find((m) => m.method === "process/exited" && m.params.processId === processId)) !== undefined, CONNECT_WAIT_MS);
  if (!exited) throw new Error(`no process/exited for ${processId}`);
  return exited.params;
}

/** A daemon the classic way: a subshell forks it in the background and exits; it calls setsid. It prints its pid. */
const DAEMON = `(setsid sh -c 'echo daemon=$$; exec sleep 1000' >&2 &) ; exit 0`;

/** Daemons the tests started: killed after each test while their pid is still that process. */
const daemons: { pid: number; identity: string | undefined }[] = [];
afterEach(() => {
  for (const { pid, identity } of daemons.splice(0)) if (identity && processIdentity(pid) === identity) process.kill(pid, "SIGKILL");
});

/** Starts DAEMON through process/spawn; once its launcher has exited 0 and the app-server adopted it, its pid. */
async function adoptedDaemon(bridge: ConnectClient, serverPid: number): Promise<number> {
  const { process: p } = await bridge.call("process/spawn", { argv: ["sh", "-c", DAEMON] });
  let daemon = 0;
  await eventually(() => (daemon = Number(/daemon=(\d+)/.exec(bridge.output(p.processId, "stderr").text)?.[1] ?? 0)) > 0, CONNECT_WAIT_MS);
  expect(daemon).toBeGreaterThan(0);
  daemons.push({ pid: daemon, identity: processIdentity(daemon) });
  expect((await exitOf(bridge, p.processId)).exitCode).toBe(0);
  // Its parent is gone: it now belongs to the app-server, not to init.
  expect(await eventually(() => statOf(daemon)?.ppid === serverPid, CONNECT_WAIT_MS)).toBe(true);
  expect(isAlive(daemon)).toBe(true);
  return daemon;
}

describe("orphans of session processes", () => {
  test("a double-forked setsid daemon is re-parented to the app-server and ended by stop", async () => {
    const { home, bridge, serverPid } = await connected();
    const daemon = await adoptedDaemon(bridge, serverPid);
    const stopped = await home.run(["stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped" });
    expect(await eventually(() => !isAlive(daemon), CONNECT_WAIT_MS)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("an app-server killed with SIGKILL cannot end the daemon it adopted: the next one does, from its ledger", async () => {
    const { home, bridge, serverPid } = await connected();
    const daemon = await adoptedDaemon(bridge, serverPid);
    const ledger = home.path("daemon/app-server.processes.json");
    expect(await eventually(() => parseLedger(readFileSync(ledger, "utf8")).some((entry) => entry.pid === daemon && entry.member), CONNECT_WAIT_MS)).toBe(true);

    process.kill(serverPid, "SIGKILL");
    expect(await bridge.exited).toBe(75);
    expect(isAlive(daemon)).toBe(true);
    // The keeper restarts the crashed server (spec "Supervision"), or `start` does if it comes first.
    const started = await home.run(["start"]);
    expect(["started", "alreadyRunning"]).toContain(started.json.status);
    expect(await eventually(() => !isAlive(daemon), CONNECT_WAIT_MS)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test(`${BURST} processes each leaving an orphan that exits at once: no zombie is left, and every exit code is reported`, async () => {
    const { bridge, serverPid } = await connected();
    const spawned: { processId: string; code: number }[] = [];
    for (let i = 0; i < BURST; i += 1) {
      const code = i % 7;
      const argv = ["sh", "-c", `(setsid sh -c 'exit 0' &) ; (sh -c 'sleep 0.05' &) ; exit ${code}`];
      spawned.push({ processId: (await bridge.call("process/spawn", { argv })).process.processId, code });
    }
    for (const { processId, code } of spawned) expect((await exitOf(bridge, processId)).exitCode).toBe(code);
    expect(await eventually(() => zombieChildrenOf(serverPid).length === 0, CONNECT_WAIT_MS)).toBe(true);
    // Bun still reaps its own: a plain process's exit code after the burst.
    const { process: plain } = await bridge.call("process/spawn", { argv: ["sh", "-c", "exit 42"] });
    expect((await exitOf(bridge, plain.processId)).exitCode).toBe(42);
    expect(zombieChildrenOf(serverPid)).toEqual([]);
  }, TEST_TIMEOUT_MS);
});

test("childrenOfSelf lists this process's children; one reaped is gone from it", async () => {
  const child = Bun.spawn(["sleep", "1000"]);
  try {
    expect(childrenOfSelf()).toContain(child.pid);
  } finally {
    child.kill("SIGKILL");
    await child.exited;
  }
  expect(childrenOfSelf()).not.toContain(child.pid);
});
