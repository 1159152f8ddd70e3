/**
 * A release that passes the update's health check (it answers `initialize`) and then crash-loops. The keeper
 * gave up after its fifth crash (SPEC "Supervision") and left the machine without an app-server, while the
 * release it ran happily a minute before was still installed. Now the keeper rolls a release back that a
 * rollout put in place shortly before, and quarantines it, as the loop does for one that never became ready.
 * Releases are source launchers signed with a key trusted through BERTH_TRUSTED_KEYS; the host is loopback.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crashLoopRollback, ROLLBACK_WINDOW_MS } from "../src/update/crash-rollback.ts";
import { probeInitialize } from "../src/server/client.ts";
import { BUN, MAIN, TARGET, eventually, makeHome, type TestHome } from "./helpers/berth.ts";
import { serveDirectory } from "./helpers/release-server.ts";
import { newKey, publishSigned } from "./helpers/signed-release.ts";

const TEST_TIMEOUT_MS = 150_000;
const WAIT_MS = 60_000;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("which crash loop is rolled back (pure)", () => {
  const at = Date.parse("2026-01-01T00:00:00Z");
  const last = { version: "1.1.0", previousReleaseDir: "1.0.0-linux-x64", at: new Date(at).toISOString() };
  const cases = [
    { name: "the release the last rollout put in place, soon after", last, managed: "1.1.0", now: at + 60_000, out: "1.0.0-linux-x64" },
    { name: "another release is current now (installed by hand since)", last, managed: "1.2.0", now: at + 60_000, out: undefined },
    { name: "long after the rollout: something else is to blame", last, managed: "1.1.0", now: at + ROLLBACK_WINDOW_MS, out: undefined },
    { name: "no rollout recorded (a first install)", last: undefined, managed: "1.1.0", now: at, out: undefined },
    { name: "a rollout time ahead of the clock (set back since): not trusted", last, managed: "1.1.0", now: at - 1, out: undefined },
  ];
  for (const c of cases) test(c.name, () => expect(crashLoopRollback(c.last, c.managed, c.now)).toBe(c.out));
});

/** 1.1.0: every app-server it starts after `<home>/crash-from-now` exists dies 1 s later (SIGKILL from its launcher's child). */
function crashingLauncher(path: string, home: string): void {
  const flag = join(home, "crash-from-now");
  writeFileSync(
    path,
    `#!/bin/sh\nexport BERTH_BUILD_VERSION='1.1.0'\nif [ "$1" = serve ] && [ -e '${flag}' ]; then ( sleep 1; kill -9 $$ ) & fi\nexec '${BUN}' '${MAIN}' "$@"\n`,
  );
  chmodSync(path, 0o755);
}

async function answeringVersion(home: TestHome): Promise<string | undefined> {
  const probe = await probeInitialize(home.path("daemon/app-server.sock"), 1_000);
  return probe.kind === "berth" ? probe.info.serverInfo.version : undefined;
}

test(
  "a release that answers, then crash-loops right after its rollout is rolled back and quarantined; the app-server runs again",
  async () => {
    const work = mkdtempSync(join(tmpdir(), "berth-a6-rollback-"));
    cleanups.push(() => rmSync(work, { recursive: true, force: true }));
    const key = newKey();
    const keyFile = join(work, "release.pub.pem");
    writeFileSync(keyFile, key.publicPem);
    const host = await serveDirectory(join(work, "host"));
    cleanups.push(() => host.stop());
    const home = makeHome({ version: "1.0.0", prefix: "berth-a6-rollback-" });
    cleanups.push(async () => {
      await home.run(["down"]).catch(() => undefined);
      await home.cleanup();
    });
    const env = { BERTH_RELEASE_BASE_URL: host.url, BERTH_TRUSTED_KEYS: keyFile, BERTH_UPDATE_INITIAL_DELAY_MS: "0", BERTH_UPDATE_INTERVAL_MS: "300" };
    expect((await home.run(["bootstrap"], { env })).json).toMatchObject({ status: "bootstrapped", appServerVersion: "1.0.0" });
    const log = () => readFileSync(home.path("daemon/updater.log"), "utf8");

    const launcher = join(work, "berth-1.1.0");
    crashingLauncher(launcher, home.home);
    publishSigned(join(work, "host"), "1.1.0", launcher, { key, target: TARGET, cacheDir: work });
    // The rollout validates 1.1.0 (it answers), then every 1.1.0 server dies a second after it starts.
    expect(await eventually(() => /check: updated: installed 1\.1\.0; app-server restarted on it/.test(log()), WAIT_MS, 100)).toBe(true);
    writeFileSync(home.path("crash-from-now"), "");
    // The 1.1.0 server running now was started before the flag: it is the first crash.
    const running = await probeInitialize(home.path("daemon/app-server.sock"), 1_000);
    if (running.kind === "berth") process.kill(running.info.pid, "SIGKILL");

    expect(await eventually(() => /soon after its rollout: rolled back to 1\.0\.0/.test(log()), WAIT_MS, 200)).toBe(true);
    expect(readlinkSync(home.path("packages/standalone/current"))).toBe(`releases/1.0.0-${TARGET}`);
    expect(await eventually(async () => (await answeringVersion(home)) === "1.0.0", WAIT_MS, 200)).toBe(true);
    const status = (await home.run(["status"], { env })).json;
    expect(status.updater.quarantined).toContain("1.1.0");
    expect(status.appServer).toMatchObject({ state: "running", version: "1.0.0" });
    // Later checks do not take 1.1.0 again.
    const after = log().length;
    expect(await eventually(() => /check: quarantined/.test(log().slice(after)), WAIT_MS, 200)).toBe(true);
    expect(readlinkSync(home.path("packages/standalone/current"))).toBe(`releases/1.0.0-${TARGET}`);
  },
  TEST_TIMEOUT_MS,
);

test("an update that made another release current while the rollback waited for install.lock is not flipped back", async () => {
  const home = makeHome({ version: "1.0.0", settings: {} });
  cleanups.push(() => home.cleanup());
  const { installRelease } = await import("./helpers/berth.ts");
  installRelease(home.home, "1.2.0");
  installRelease(home.home, "1.1.0");
  writeFileSync(
    home.path("daemon", "updater-state.json"),
    JSON.stringify({ quarantined: [], lastRollout: { version: "1.1.0", previousReleaseDir: `1.0.0-${TARGET}`, at: new Date().toISOString() } }),
    { mode: 0o600 },
  );
  const { holdLock } = await import("./helpers/holder.ts");
  const { openContext } = await import("../src/daemon/context.ts");
  const { rollBackCrashLoop } = await import("../src/update/crash-rollback.ts");
  // A real update holds install.lock (another process) while it makes 1.2.0 current.
  const holder = await holdLock(home.path("packages", "standalone", "install.lock"));
  cleanups.push(() => holder.kill());
  const rollback = rollBackCrashLoop(openContext({ ...home.env }), Date.now());
  installRelease(home.home, "1.2.0");
  holder.send("release");
  expect(await holder.exited).toBe(0);
  expect(await rollback).toBeUndefined();
  expect(readlinkSync(home.path("packages", "standalone", "current"))).toBe(`releases/1.2.0-${TARGET}`);
  expect(JSON.parse(readFileSync(home.path("daemon", "updater-state.json"), "utf8")).quarantined).toEqual([]);
}, TEST_TIMEOUT_MS);
