// SPEC "Supervision": "The updater loop is also the app-server's keeper: it
// runs whenever the app-server is wanted". A settings.json with a typo must
// not end it: the loop re-executes itself from each new release (SPEC
// "Updater"), days after the typo, and read its settings before anything else.
import { afterEach, expect, test } from "bun:test";
import { readFileSync, realpathSync, writeFileSync } from "node:fs";
import { probeInitialize } from "../src/server/client.ts";
import { eventually, homesPerTest, installRelease, isAlive, loopBinaryOf, readJson, type TestHome } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const TEST_TIMEOUT_MS = 90_000;
const WAIT_MS = 20_000;
/** Update ticks every second (the floor), so the loop runs the new release's step soon after the flip. */
const FAST_TICKS = { BERTH_UPDATE_INITIAL_DELAY_MS: "1000", BERTH_UPDATE_INTERVAL_MS: "1000" };

async function answeringPid(home: TestHome): Promise<number | undefined> {
  const probe = await probeInitialize(home.path("daemon/app-server.sock"), 1_000);
  return probe.kind === "berth" ? probe.info.pid : undefined;
}

const log = (home: TestHome) => readFileSync(home.path("daemon/updater.log"), "utf8");

test.skipIf(process.platform !== "linux")(
  "a keeper re-executed from a new release while settings.json is corrupt keeps running and, once the file is fixed, restarts a crashed app-server",
  async () => {
    const home = newHome();
    const boot = await home.run(["bootstrap", "--no-auto-update"], { env: FAST_TICKS });
    expect(boot.json.status).toBe("bootstrapped");
    const keeper = boot.json.updater.pid as number;
    expect(await eventually(() => log(home).includes(`watching app-server pid ${boot.json.pid}`), WAIT_MS)).toBe(true);

    writeFileSync(home.path("daemon/settings.json"), "{ a typo");
    const newBinary = installRelease(home.home, "0.2.0");
    // The loop (same pid) re-executes `update-loop` from 0.2.0, which reads settings.json first.
    expect(await eventually(() => loopBinaryOf(keeper) === realpathSync(newBinary), WAIT_MS)).toBe(true);
    expect(await eventually(() => /settings\.json is not valid JSON.*keeping the app-server/.test(log(home)), WAIT_MS)).toBe(true);
    expect(isAlive(keeper)).toBe(true);
    expect(readJson(home.path("daemon/updater.pid")).pid).toBe(keeper);
    expect(readFileSync(home.path("daemon/settings.json"), "utf8")).toBe("{ a typo");

    // Fixed: a crash is restarted by the same keeper.
    writeFileSync(home.path("daemon/settings.json"), "{}");
    process.kill(boot.json.pid, "SIGKILL");
    expect(await eventually(async () => {
      const pid = await answeringPid(home);
      return pid !== undefined && pid !== boot.json.pid;
    }, WAIT_MS)).toBe(true);
    expect(isAlive(keeper)).toBe(true);
  },
  TEST_TIMEOUT_MS,
);
