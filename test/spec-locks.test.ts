/**
 * SPEC "Lifecycle rules": the mutating commands hold daemon.lock while they act; a second caller waits, then
 * fails with LOCK_TIMEOUT and changes nothing. Each command here meets a daemon.lock held by another process
 * (start and restart are covered in lifecycle.test.ts, install in install.test.ts).
 */
import { afterEach, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { homesPerTest, treeSnapshot } from "./helpers/berth.ts";
import { holdLock, type Holder } from "./helpers/holder.ts";

/** Short: each command gives up quickly; a command that took no lock would answer otherwise. */
const LOCK_WAIT_MS = "300";
const COMMANDS = [["stop"], ["bootstrap", "--remote-control"], ["enable-remote-control"], ["disable-remote-control"], ["down"], ["uninstall"]];

const newHome = homesPerTest(afterEach);
const holders: Holder[] = [];
afterEach(async () => {
  for (const holder of holders.splice(0)) await holder.kill();
});

test("stop, bootstrap, the remote-control commands, down and uninstall: LOCK_TIMEOUT naming daemon.lock, nothing changed", async () => {
  const home = newHome();
  mkdirSync(home.path("daemon"), { mode: 0o700 });
  writeFileSync(home.path("daemon", "settings.json"), '{"userKey":1}', { mode: 0o600 });
  const holder = await holdLock(home.path("daemon", "daemon.lock"));
  holders.push(holder);
  const before = treeSnapshot(home.env.HOME as string);
  for (const args of COMMANDS) {
    const result = await home.run(args, { env: { BERTH_LOCK_WAIT_MS: LOCK_WAIT_MS } });
    expect({ args, code: result.code, error: result.json?.error?.code }).toEqual({ args, code: 1, error: "LOCK_TIMEOUT" });
    expect(result.json.error.message).toContain(home.path("daemon", "daemon.lock"));
    expect(treeSnapshot(home.env.HOME as string)).toEqual(before);
  }
});
