// What happens to session processes when the app-server stops or restarts:
// every one ends (terminal sessions by SIGHUP, other groups by SIGTERM, then
// SIGKILL after the grace), including one that ignores SIGTERM and a
// grandchild in its own session; `stop`/`restart` report processesEnded.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { childrenKilledPerTest, eventually, isAlive, nonKeeperProcessesOf, processesOf } from "./helpers/berth.ts";
import { CONNECT_WAIT_MS, connectFixtures, type ConnectClient } from "./helpers/connect.ts";
import { parseLedger } from "../src/server/process/ledger.ts";
import { reportSaysSomething } from "../src/server/run.ts";

const TEST_TIMEOUT_MS = 90_000;
const fixtures = connectFixtures("berth-sessions-");
/** Processes a test starts outside any home (a stranger): killed after each test, a failed one too. */
const strangers = childrenKilledPerTest(afterEach);

async function connected(settings: object) {
  const home = fixtures.home(settings);
  const bridge = fixtures.connect(home);
  await bridge.waitConnected();
  await bridge.initialize();
  return { home, bridge };
}

async function pidFromOutput(bridge: ConnectClient, processId: string, stream: string, pattern: RegExp): Promise<number> {
  let match: RegExpMatchArray | null = null;
  await eventually(() => (match = bridge.output(processId, stream).text.match(pattern)) !== null, CONNECT_WAIT_MS);
  if (!match) throw new Error(`no ${pattern} in ${processId}/${stream}`);
  return Number((match as RegExpMatchArray)[1]);
}

describe("parseLedger", () => {
  const entry = { pid: 42, identity: "boot/123" };
  const cases: Array<[string | undefined, unknown[]]> = [
    [undefined, []],
    ["", []],
    ["not json", []],
    ["null", []],
    ['{"processes":{}}', []],
    [JSON.stringify({ processes: [entry] }), [entry]],
    [JSON.stringify({ processes: [entry, { pid: 1, identity: "x" }, { pid: "7", identity: "x" }, { pid: 9 }, null] }), [entry]],
    // A member left behind by its reaped leader is ended alone; anything but `true` there is a group leader.
    [JSON.stringify({ processes: [{ ...entry, member: true }, { pid: 43, identity: "boot/124", member: "yes" }] }), [{ ...entry, member: true }, { pid: 43, identity: "boot/124" }]],
  ];
  for (const [text, expected] of cases) test(String(text), () => expect(parseLedger(text)).toEqual(expected as never));
});

describe("reportSaysSomething: a shutdown report is written only when it holds more than zeros", () => {
  const cases: [Record<string, unknown>, boolean][] = [
    [{ processesEnded: 0 }, false],
    [{}, false],
    [{ processesEnded: 1 }, true],
    [{ processesEnded: 0, tunnelsClosed: 2 }, true],
    [{ processesEnded: 0, note: "x" }, true],
  ];
  for (const [report, expected] of cases) test(JSON.stringify(report), () => expect(reportSaysSomething(report)).toBe(expected));
});

describe("session processes and the app-server's lifecycle", () => {
  test("stop ends every process (one ignoring SIGTERM, a grandchild in its own session, a terminal) and reports processesEnded", async () => {
    const { home, bridge } = await connected({ stopGraceMs: 3_000 });
    const stubborn = (await bridge.call("process/spawn", { argv: ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"] })).process;
    const parent = (await bridge.call("process/spawn", { argv: ["sh", "-c", "setsid sh -c 'echo gc=$$; exec sleep 1000' & wait"] })).process;
    const terminal = (await bridge.call("process/spawn", { argv: ["sh"], terminal: { cols: 80, rows: 24 } })).process;
    const plain = (await bridge.call("process/spawn", { argv: ["sleep", "1000"] })).process;
    // Its TERM trap is set: only then is it the process that ignores SIGTERM.
    expect(await eventually(() => bridge.output(stubborn.processId, "stdout").text.includes("ready"), CONNECT_WAIT_MS)).toBe(true);
    const grandchild = await pidFromOutput(bridge, parent.processId, "stdout", /gc=(\d+)/);
    const pids = [stubborn.pid, parent.pid, terminal.pid, plain.pid, grandchild];
    expect(pids.every(isAlive)).toBe(true);

    const stopped = await home.run(["stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped", processesEnded: 4 });
    expect(pids.filter(isAlive)).toEqual([]);
    expect(await bridge.exited).toBe(75);
    expect(nonKeeperProcessesOf(home)).toEqual([]);
  }, TEST_TIMEOUT_MS);

  test("a stopped process (SIGSTOP, a ^Z'd job) is continued after its SIGTERM, so it ends by it and not by the SIGKILL after the grace", async () => {
    const { home, bridge } = await connected({ stopGraceMs: 5_000 });
    const marker = home.path("ended-by-sigterm");
    const { process: p } = await bridge.call("process/spawn", { argv: ["sh", "-c", `trap 'echo term > "$0"; exit 0' TERM; echo ready; while :; do sleep 0.1; done`, marker] });
    expect(await eventually(() => bridge.output(p.processId, "stdout").text.includes("ready"), CONNECT_WAIT_MS)).toBe(true);
    expect((await bridge.call("process/signal", { processId: p.processId, signal: "SIGSTOP" })).delivered).toBe(true);
    const stopped = await home.run(["stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped", processesEnded: 1 });
    expect(isAlive(p.pid)).toBe(false);
    expect(existsSync(marker)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("restart reports processesEnded and the new server starts with none", async () => {
    const { home, bridge } = await connected({ stopGraceMs: 3_000 });
    const p = (await bridge.call("process/spawn", { argv: ["sleep", "1000"] })).process;
    const restarted = await home.run(["restart"]);
    expect(restarted.json).toMatchObject({ status: "restarted", processesEnded: 1 });
    expect(isAlive(p.pid)).toBe(false);
    expect(await bridge.exited).toBe(75);
    const again = fixtures.connect(home);
    await again.waitConnected();
    await again.initialize();
    expect((await again.call("process/list")).processes).toEqual([]);
    again.proc.stdin.end();
    expect(await again.exited).toBe(0);
    const stopped = await home.run(["stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped", processesEnded: 0 });
    // The first server's report (1 ended) was removed by this stop before its signal; a server that ended none writes none.
    expect(existsSync(home.path("daemon", "app-server.shutdown.json"))).toBe(false);
  }, TEST_TIMEOUT_MS);

  test("down ends every process too and reports processesEnded, like stop", async () => {
    const { home, bridge } = await connected({ stopGraceMs: 3_000 });
    const plain = (await bridge.call("process/spawn", { argv: ["sleep", "1000"] })).process;
    const terminal = (await bridge.call("process/spawn", { argv: ["sh"], terminal: { cols: 80, rows: 24 } })).process;
    const down = await home.run(["down"]);
    expect(down.json).toMatchObject({ status: "down", appServer: "stopped", keeper: "stopped", processesEnded: 2 });
    expect([plain.pid, terminal.pid].filter(isAlive)).toEqual([]);
    expect(await bridge.exited).toBe(75);
    expect(await eventually(() => processesOf(home.home).length === 0, 20_000)).toBe(true);
    expect((await home.run(["down"])).json).toMatchObject({ status: "down", appServer: "notRunning", processesEnded: 0 });
  }, TEST_TIMEOUT_MS);

  test("an app-server killed with SIGKILL cannot end its processes: the next one does (and only those)", async () => {
    const { home, bridge } = await connected({ stopGraceMs: 3_000 });
    const serverPid = bridge.connected.pid as number;
    const { process: p } = await bridge.call("process/spawn", { argv: ["sleep", "1000"] });
    const stranger = Bun.spawn(["setsid", "sleep", "1000"], { stdio: ["ignore", "ignore", "ignore"] });
    strangers.push(stranger);
    process.kill(serverPid, "SIGKILL");
    expect(await bridge.exited).toBe(75);
    expect(isAlive(p.pid)).toBe(true);
    // The keeper restarts the crashed server (spec "Supervision"), or `start` does if it comes first.
    const started = await home.run(["start"]);
    expect(["started", "alreadyRunning"]).toContain(started.json.status);
    expect(await eventually(() => !isAlive(p.pid), 20_000)).toBe(true);
    expect(isAlive(stranger.pid)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("what an exited process left running in its group is ended by the next app-server after a SIGKILL too", async () => {
    const { home, bridge } = await connected({ stopGraceMs: 3_000 });
    const serverPid = bridge.connected.pid as number;
    // The leader exits at once; its background sleep stays in the group, reparented away from the server.
    const { process: p } = await bridge.call("process/spawn", { argv: ["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo left=$!"] });
    const left = await pidFromOutput(bridge, p.processId, "stdout", /left=(\d+)/);
    try {
      expect(await eventually(async () => (await bridge.call("process/list")).processes[0]?.state === "exited", CONNECT_WAIT_MS)).toBe(true);
      process.kill(serverPid, "SIGKILL");
      expect(await bridge.exited).toBe(75);
      expect(isAlive(left)).toBe(true);
      const started = await home.run(["start"]);
      expect(["started", "alreadyRunning"]).toContain(started.json.status);
      expect(await eventually(() => !isAlive(left), 20_000)).toBe(true);
    } finally {
      if (isAlive(left)) process.kill(left, "SIGKILL");
    }
  }, TEST_TIMEOUT_MS);
});
