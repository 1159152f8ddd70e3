/**
 * Issue 8 items 1, 2, 10: berth never signals a process it has not proven is
 * its own, and stop ends what the server left behind. Every attack uses real
 * processes; every foreign process is a real `sleep` whose survival is asserted.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { adoptionRefusal } from "../src/daemon/adoption.ts";
import { PidBackend } from "../src/daemon/backend.ts";
import { layoutFor } from "../src/platform/paths.ts";
import { processEntryIdentity, treeOf } from "../src/platform/process.ts";
import { BUN, ROOT, eventually, installFixtureRelease, isAlive, pidsKilledPerTest, homesPerTest, type TestHome } from "./helpers/berth.ts";
import { acceptsWebSocket } from "./helpers/session.ts";

const SLOW_TEST_MS = 120_000;
const strangers = pidsKilledPerTest(afterEach);
const newHome = homesPerTest(afterEach);

function stat(pid: number): { ppid: number; pgrp: number; state: string } {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0] as string, ppid: Number(fields[1]), pgrp: Number(fields[2]) };
}

function membersOfGroup(pgid: number): number[] {
  const found: number[] = [];
  for (const entry of require("node:fs").readdirSync("/proc") as string[]) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const s = stat(Number(entry));
      if (s.pgrp === pgid && s.state !== "Z" && Number(entry) !== pgid) found.push(Number(entry));
    } catch {
      // gone
    }
  }
  return found;
}

/** `setsid sh -c 'sleep 1000 & sleep 1000 & exit 0'`: a group P whose leader is gone. Returns P and the sleeps. */
async function leaderlessGroup(): Promise<{ pgid: number; sleeps: number[] }> {
  const child = Bun.spawn({ cmd: ["setsid", "sh", "-c", "sleep 1000 & sleep 1000 & exit 0"], stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  const pgid = child.pid;
  await child.exited;
  let sleeps: number[] = [];
  expect(await eventually(() => (sleeps = membersOfGroup(pgid)).length === 2)).toBe(true);
  strangers.push(...sleeps);
  return { pgid, sleeps };
}

/** A group whose leader is a zombie (its parent, a `sleep`, never reaps it), with two sleeping members. */
async function zombieLedGroup(): Promise<{ pgid: number; sleeps: number[]; parent: number }> {
  const parent = Bun.spawn({
    // The leader exits only once the outer shell has exec'd `sleep` (which never reaps): dash reaps a child that
    // exits before its exec, and a fixed linger (0.5 s) could lose that race under load.
    cmd: ["sh", "-c", `setsid sh -c 'sleep 1000 & sleep 1000 & until [ "$(cat /proc/$PPID/comm)" = sleep ]; do sleep 0.01; done' & echo $!; exec sleep 1000`],
    stdin: "ignore",
    stdout: "pipe",
    stderr: "ignore",
  });
  strangers.push(parent.pid);
  const reader = parent.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  const pgid = Number(new TextDecoder().decode(value).trim());
  let sleeps: number[] = [];
  expect(await eventually(() => (sleeps = membersOfGroup(pgid)).length === 2)).toBe(true);
  strangers.push(...sleeps);
  expect(await eventually(() => stat(pgid).state === "Z")).toBe(true);
  return { pgid, sleeps, parent: parent.pid };
}

function writeUpdaterRecord(home: TestHome, record: object): void {
  require("node:fs").mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
  writeFileSync(home.path("daemon", "updater.pid"), JSON.stringify(record));
}

describe("item 1: a foreign process group is never signalled", () => {
  test(
    "a previous-boot updater record naming a leaderless group: status says stopped, bootstrap leaves both sleeps alive",
    async () => {
      const home = newHome();
      const { pgid, sleeps } = await leaderlessGroup();
      writeUpdaterRecord(home, { pid: pgid, processStartTime: "00000000-0000-0000-0000-000000000000/12345" });
      const status = await home.run(["status"]);
      expect(status.json.updater.state).toBe("stopped");
      expect(status.json.updater.pid).toBeUndefined();
      const boot = await home.run(["bootstrap", "--no-auto-update"]);
      expect(boot.json.status).toBe("bootstrapped");
      for (const pid of sleeps) expect(isAlive(pid)).toBe(true);
      // The stale record was replaced by the keeper's own (spec "Supervision": it runs also with auto-update off).
      const record = JSON.parse(readFileSync(home.path("daemon", "updater.pid"), "utf8"));
      expect(record.pid).toBe(boot.json.updater.pid);
      expect(record.pid).not.toBe(pgid);
    },
    SLOW_TEST_MS,
  );

  test(
    "a record whose leader is now a zombie with another start time: not ours, both sleeps survive",
    async () => {
      const home = newHome();
      const { pgid, sleeps } = await zombieLedGroup();
      const bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
      writeUpdaterRecord(home, { pid: pgid, processStartTime: `${bootId}/12345` });
      const status = await home.run(["status"]);
      expect(status.json.updater.state).toBe("stopped");
      const boot = await home.run(["bootstrap", "--no-auto-update"]);
      expect(boot.code).toBe(0);
      for (const pid of sleeps) expect(isAlive(pid)).toBe(true);
    },
    SLOW_TEST_MS,
  );

  test("a zombie leader with the recorded identity still proves the group is ours (and stop ends it)", async () => {
    const home = newHome();
    const { pgid, sleeps } = await zombieLedGroup();
    const identity = processEntryIdentity(pgid);
    expect(identity?.zombie).toBe(true);
    const backend = new PidBackend({ pidPath: home.path("updater.pid"), trackGroup: true });
    const record = { pid: pgid, processStartTime: identity!.identity };
    expect(backend.isAlive(record)).toBe(true);
    expect((await backend.stopTree(record, 2_000)).status).toBe("stopped");
    expect(await eventually(() => sleeps.every((pid) => !isAlive(pid)))).toBe(true);
  });
});

describe("item 2: adoption needs the kernel's word, not the peer's", () => {
  async function fakeServer(home: TestHome, claimedPid: number): Promise<number> {
    const socketPath = layoutFor(home.home).defaultSocket;
    require("node:fs").mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    const fake = Bun.spawn({
      cmd: [BUN, join(ROOT, "test", "fixtures", "fake-server.ts"), socketPath],
      env: { ...home.env, FAKE_CLAIM_PID: String(claimedPid) },
      stdin: "ignore",
      stdout: "ignore",
      stderr: "ignore",
    });
    strangers.push(fake.pid);
    // Listening, not only bound: a socket that refuses connections reads to start as a stale one.
    expect(await eventually(() => acceptsWebSocket(socketPath))).toBe(true);
    return fake.pid;
  }

  for (const claim of ["an unrelated sleep", "pid 1"]) {
    test(
      `a fake server claiming ${claim}: start and stop refuse with NOT_MANAGED and signal nothing`,
      async () => {
        const home = newHome();
        const victim = Bun.spawn({ cmd: ["sleep", "1000"], stdin: "ignore", stdout: "ignore", stderr: "ignore" });
        strangers.push(victim.pid);
        const fake = await fakeServer(home, claim === "pid 1" ? 1 : victim.pid);
        const start = await home.run(["start"]);
        expect(start.json?.error?.code).toBe("NOT_MANAGED");
        expect(start.json.error.message).toContain(claim === "pid 1" ? "never adopts" : `kernel says pid ${fake}`);
        const stop = await home.run(["stop"]);
        expect(stop.json?.error?.code).toBe("NOT_MANAGED");
        expect(isAlive(victim.pid)).toBe(true);
        expect(isAlive(fake)).toBe(true);
        expect(existsSync(home.path("daemon", "app-server.pid"))).toBe(false);
      },
      SLOW_TEST_MS,
    );
  }

  test("judging the facts (pure)", () => {
    const ctx = { layout: layoutFor("/h"), socket: { path: "/h/daemon/app-server.sock" } };
    const good = {
      claimedPid: 50,
      ourUid: 7,
      peer: { pid: 50, uid: 7 },
      argv: ["/h/berth", "serve", "--listen", "unix:///h/daemon/app-server.sock"],
      berthHome: "/h",
    };
    expect(adoptionRefusal(ctx, good, "linux")).toBeUndefined();
    expect(adoptionRefusal(ctx, { ...good, claimedPid: 1, peer: { pid: 1, uid: 7 } }, "linux")).toContain("never adopts");
    expect(adoptionRefusal(ctx, { ...good, peer: undefined }, "linux")).toContain("no peer");
    expect(adoptionRefusal(ctx, { ...good, peer: { pid: 51, uid: 7 } }, "linux")).toContain("kernel says pid 51");
    expect(adoptionRefusal(ctx, { ...good, peer: { pid: 50, uid: 8 } }, "linux")).toContain("uid 8");
    expect(adoptionRefusal(ctx, { ...good, argv: ["sleep", "1000"] }, "linux")).toContain("not a berth");
    expect(adoptionRefusal(ctx, { ...good, argv: ["x", "serve", "--listen", "unix:///other.sock"] }, "linux")).toContain("not a berth");
    expect(adoptionRefusal(ctx, { ...good, berthHome: "/other" }, "linux")).toContain("BERTH_HOME=/other");
    expect(adoptionRefusal(ctx, { ...good, argv: undefined, berthHome: undefined }, "darwin")).toBeUndefined();
  });
});

describe("item 10: stop ends descendants that left the group", () => {
  test(
    "a server child that called setsid is ended by stop",
    async () => {
      const home = newHome({ install: false });
      installFixtureRelease(home.home, join(ROOT, "test", "fixtures", "tree-server.ts"));
      const start = await home.run(["start"]);
      expect(start.json.status).toBe("started");
      const server = start.json.pid as number;
      let child = 0;
      expect(
        await eventually(() => {
          const match = /tree-server child (\d+)/.exec(readFileSync(home.path("daemon", "app-server.log"), "utf8"));
          child = Number(match?.[1] ?? 0);
          return child > 0 && isAlive(child) && stat(child).pgrp !== server;
        }),
      ).toBe(true);
      strangers.push(child);
      expect(stat(child).ppid).toBe(server);
      const stop = await home.run(["stop"]);
      expect(stop.json.status).toBe("stopped");
      expect(stop.json.notEnded).toBeUndefined();
      expect(isAlive(child)).toBe(false);
    },
    SLOW_TEST_MS,
  );

  test("the tree of a process: children by parent link, group members, nothing else (pure)", () => {
    const entries = [
      { pid: 10, ppid: 1, pgrp: 10, identity: "a" },
      { pid: 11, ppid: 10, pgrp: 10, identity: "b" },
      { pid: 12, ppid: 11, pgrp: 12, identity: "c" },
      { pid: 13, ppid: 1, pgrp: 10, identity: "d" },
      { pid: 14, ppid: 1, pgrp: 14, identity: "e" },
      { pid: 15, ppid: 12, pgrp: 12, identity: "f" },
    ];
    expect(treeOf(10, entries).map((e) => e.pid).sort()).toEqual([11, 12, 13, 15]);
  });
});

describe("SIGCONT after SIGTERM (a stop's second signal)", () => {
  const hasStrace = spawnSync("sh", ["-c", "command -v strace"]).status === 0;

  /** Each `kill(target, SIGCONT)` in an strace log, with whether /proc/<|target|>/stat was read since that target's SIGTERM. */
  function contsAfterTerms(log: string): { target: number; checked: boolean }[] {
    const conts: { target: number; checked: boolean }[] = [];
    const since = new Map<number, boolean>();
    for (const line of log.split("\n")) {
      const kill = /kill\((-?\d+), (SIGTERM|SIGCONT)\)/.exec(line);
      const read = /open(?:at)?\([^"]*"\/proc\/(\d+)\/stat"/.exec(line);
      if (read) for (const target of since.keys()) if (Math.abs(target) === Number(read[1])) since.set(target, true);
      if (kill?.[2] === "SIGTERM") since.set(Number(kill[1]), false);
      if (kill?.[2] === "SIGCONT") conts.push({ target: Number(kill[1]), checked: since.get(Number(kill[1])) === true });
    }
    return conts;
  }

  // strace shows the order of the syscalls; a pid reused between the two signals cannot be staged on purpose.
  test.skipIf(!hasStrace)(
    "down proves the app-server's and the updater group's identity again before each SIGCONT, not only before the SIGTERM",
    async () => {
      const home = newHome();
      const env = { BERTH_UPDATE_INITIAL_DELAY_MS: "600000" };
      const boot = await home.run(["bootstrap"], { env });
      expect(boot.json.status).toBe("bootstrapped");
      // Paused (what SIGCONT is for): neither can act on the SIGTERM, so both are certainly there to get the SIGCONT.
      process.kill(boot.json.pid, "SIGSTOP");
      process.kill(-boot.json.updater.pid, "SIGSTOP");
      const log = join(home.home, "..", "down.strace");
      const down = await home.exec(["strace", "-f", "-qq", "-o", log, "-e", "trace=kill,open,openat", BUN, join(ROOT, "src", "main.ts"), "down"], { env });
      expect(down.json.status).toBe("down");
      const conts = contsAfterTerms(readFileSync(log, "utf8"));
      expect(conts.map((cont) => cont.target).sort()).toEqual([-boot.json.updater.pid, boot.json.pid].sort());
      expect(conts).toEqual(conts.map((cont) => ({ ...cont, checked: true })));
    },
    SLOW_TEST_MS,
  );
});
