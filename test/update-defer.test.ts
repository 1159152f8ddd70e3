// The updater and running sessions: a new release is installed at once, but
// the app-server's restart waits while a session process runs (pendingRestart
// in status) and happens once it has exited. Releases are source launchers
// signed with a key trusted through BERTH_TRUSTED_KEYS; the host is loopback.
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { changeUpdaterState } from "../src/daemon/updater.ts";
import { deferredSince, restartMustWait } from "../src/update/defer.ts";
import { BUN, MAIN, TARGET, eventually, isAlive, makeHome, type TestHome } from "./helpers/berth.ts";
import { spawnConnect, type ConnectClient } from "./helpers/connect.ts";
import { serveDirectory, type DirectoryServer } from "./helpers/release-server.ts";
import { newKey, publishSigned } from "./helpers/signed-release.ts";

const TEST_TIMEOUT_MS = 120_000;
const UPDATE_WAIT_MS = 40_000;
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("restartMustWait", () => {
  const cases: Array<[number | undefined, number, boolean]> = [
    [undefined, 0, false],
    [0, 0, false],
    [1, 0, true],
    [3, 999, true],
    [3, 1000, false],
    [3, 5000, false],
  ];
  for (const [runningProcesses, waitedMs, wait] of cases) {
    test(`${runningProcesses} running, waited ${waitedMs} of 1000 ms → ${wait ? "wait" : "restart"}`, () => {
      expect(restartMustWait({ runningProcesses, sinceMs: 10_000, nowMs: 10_000 + waitedMs, maxDeferMs: 1000 })).toBe(wait);
    });
  }
});

describe("when a deferred restart's wait began (pure)", () => {
  const now = Date.parse("2026-06-01T12:00:00Z");
  const at = (ms: number) => new Date(now + ms).toISOString();
  const cases = [
    { name: "no wait recorded: now", pending: undefined, out: at(0) },
    { name: "a wait for this version: when it began", pending: { version: "1.1.0", since: at(-5_000), runningProcesses: 1 }, out: at(-5_000) },
    { name: "a wait for another version: now", pending: { version: "1.2.0", since: at(-5_000), runningProcesses: 1 }, out: at(0) },
    { name: "a wait recorded ahead of the clock (set back since): now", pending: { version: "1.1.0", since: at(86_400_000), runningProcesses: 1 }, out: at(0) },
    { name: "a damaged time: now", pending: { version: "1.1.0", since: "yesterday", runningProcesses: 1 }, out: at(0) },
  ];
  for (const c of cases) test(c.name, () => expect(deferredSince(c.pending, "1.1.0", now)).toBe(c.out));
});

/** A loopback release host with 1.1.0 (a source launcher) ready to publish, a home on 1.0.0 with the loop running, and a connected bridge. */
async function updaterWithSession(settings: object) {
  const work = mkdtempSync(join(tmpdir(), "berth-defer-"));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  const key = newKey();
  const keyFile = join(work, "release.pub.pem");
  writeFileSync(keyFile, key.publicPem);
  const launcher = join(work, "berth-1.1.0");
  writeFileSync(launcher, `#!/bin/sh\nBERTH_BUILD_VERSION='1.1.0' exec '${BUN}' '${MAIN}' "$@"\n`);
  chmodSync(launcher, 0o755);
  const root = join(work, "host");
  const host: DirectoryServer = await serveDirectory(root);
  cleanups.push(() => host.stop());

  const home: TestHome = makeHome({ version: "1.0.0", prefix: "berth-defer-", settings: { stopGraceMs: 3_000, ...settings } });
  cleanups.push(async () => {
    await home.run(["down"]).catch(() => undefined);
    await home.cleanup();
  });
  const env = { BERTH_RELEASE_BASE_URL: host.url, BERTH_TRUSTED_KEYS: keyFile, BERTH_UPDATE_INITIAL_DELAY_MS: "0", BERTH_UPDATE_INTERVAL_MS: "300" };
  const boot = await home.run(["bootstrap"], { env });
  expect(boot.json).toMatchObject({ status: "bootstrapped", appServerVersion: "1.0.0" });

  const bridge: ConnectClient = spawnConnect([BUN, MAIN, "connect"], { ...home.env, ...env });
  cleanups.push(() => bridge.kill());
  await bridge.waitConnected();
  await bridge.initialize();
  const status = async () => (await home.run(["status"], { env })).json;
  return { home, bridge, status, publish: () => publishSigned(root, "1.1.0", launcher, { key, target: TARGET, cacheDir: work }) };
}

/** Waits until `status` shows the app-server on `version` with no restart pending, and returns that status. */
async function statusOnceRestarted(readStatus: () => Promise<any>, version: string): Promise<any> {
  let status: any;
  const restarted = await eventually(async () => {
    status = await readStatus();
    // The new server can answer a moment before the updater records that the restart is done.
    return status?.appServer?.version === version && status?.pendingRestart === undefined;
  }, UPDATE_WAIT_MS, 200);
  expect(restarted).toBe(true);
  return status;
}

describe("updater and sessions", () => {
  test("the restart onto a new release waits while a process runs, then happens", async () => {
    const { bridge, status: readStatus, publish } = await updaterWithSession({});
    const { process: p } = await bridge.call("process/spawn", { argv: ["sh", "-c", "read line; echo bye"] });

    publish();
    let status: any;
    const deferred = await eventually(async () => {
      status = await readStatus();
      return status?.pendingRestart?.version === "1.1.0";
    }, UPDATE_WAIT_MS, 200);
    expect(deferred).toBe(true);
    expect(status).toMatchObject({ managedVersion: "1.1.0", appServer: { version: "1.0.0" }, pendingRestart: { version: "1.1.0", since: expect.any(String), runningProcesses: 1 } });
    expect(isAlive(p.pid)).toBe(true);

    // The process ends: the loop restarts the app-server onto 1.1.0.
    await bridge.call("process/write", { processId: p.processId, data: Buffer.from("done\n").toString("base64") });
    expect(await bridge.exited).toBe(75);
    status = await statusOnceRestarted(readStatus, "1.1.0");
    expect(status.pendingRestart).toBeUndefined();
  }, TEST_TIMEOUT_MS);

  const pastMaxDefer: { name: string; before?: (home: TestHome) => void }[] = [
    { name: "past update.maxRestartDeferMs the restart happens anyway and ends the process" },
    {
      name: "a wait recorded before the wall clock was set back still ends after update.maxRestartDeferMs, not after the jump",
      // As if the wait had begun a day "from now": recorded, then the clock was set back by a day.
      before: (home) => {
        const since = new Date(Date.now() + 86_400_000).toISOString();
        changeUpdaterState(home.path("daemon", "updater-state.json"), (state) => ({ ...state, pendingRestart: { version: "1.1.0", since, runningProcesses: 1 } }));
      },
    },
  ];
  for (const { name, before } of pastMaxDefer) {
    test(name, async () => {
      const { home, bridge, status: readStatus, publish } = await updaterWithSession({ update: { maxRestartDeferMs: 2_000 } });
      const { process: p } = await bridge.call("process/spawn", { argv: ["sleep", "1000"] });
      before?.(home);
      publish();
      const status = await statusOnceRestarted(readStatus, "1.1.0");
      expect(await bridge.exited).toBe(75);
      expect(isAlive(p.pid)).toBe(false);
      expect(status.pendingRestart).toBeUndefined();
    }, TEST_TIMEOUT_MS);
  }
});
