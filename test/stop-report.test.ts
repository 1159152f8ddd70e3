/**
 * `stop` removes the last shutdown report before its signal, and reads a
 * missing one as processesEnded 0 (the app-server writes none when it ended
 * nothing, src/server/run.ts). What sits in the report's place must not keep
 * the server running: a folder there made rm throw, and stop failed with
 * INTERNAL while the server ran on.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { eventually, homesPerTest, isAlive } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const TEST_TIMEOUT_MS = 60_000;
/** The stopped server's pid is gone within this long after stop answers (it is reaped before stop answers). */
const GONE_WAIT_MS = 10_000;

describe("stop and the shutdown report", () => {
  test("a folder where the report goes: stop still stops, says why in a warning, and reports 0", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    mkdirSync(home.path("daemon", "app-server.shutdown.json"), { mode: 0o700 });
    const stopped = await home.run(["stop"]);
    expect(stopped.code).toBe(0);
    expect(stopped.json).toMatchObject({ status: "stopped", processesEnded: 0 });
    expect(stopped.json.warnings.join("\n")).toContain("app-server.shutdown.json");
    expect(await eventually(() => !isAlive(started.json.pid), GONE_WAIT_MS)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("a stale report naming the running server's pid (pid reuse) is removed first, not read", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    const report = home.path("daemon", "app-server.shutdown.json");
    writeFileSync(report, `${JSON.stringify({ pid: started.json.pid, instanceId: "an-earlier-boot", processesEnded: 5 })}\n`, { mode: 0o600 });
    const stopped = await home.run(["stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped", processesEnded: 0 });
    // The server ended nothing, so it wrote no report of its own.
    expect(existsSync(report)).toBe(false);
  }, TEST_TIMEOUT_MS);
});
