/**
 * SPEC "Commands", `status`: everything known, running or not — here, the installed releases, which no other
 * test read from status.
 */
import { afterEach, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { homesPerTest, installRelease, TARGET } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);

test("status lists every installed release, oldest to newest by version, the current one marked; nothing running is needed", async () => {
  const home = newHome({ install: false });
  for (const version of ["1.10.0", "1.9.0", "2.0.0-rc.1", "1.2.3"]) installRelease(home.home, version);
  // current → 1.9.0: installRelease points it at the last one written.
  installRelease(home.home, "1.9.0");
  const status = await home.run(["status"]);
  expect(status.code).toBe(0);
  expect(status.json.status).toBe("stopped");
  expect(status.json.managedVersion).toBe("1.9.0");
  expect(status.json.releases).toEqual(
    ["1.2.3", "1.9.0", "1.10.0", "2.0.0-rc.1"].map((version) => ({ name: `${version}-${TARGET}`, version, current: version === "1.9.0" })),
  );
});

// SPEC "Commands": UPDATE_FAILED is a stable code; the one way berth reaches it is an update with nowhere to look.
test("update with no release base URL anywhere (none compiled in, none in settings or the environment): UPDATE_FAILED saying what to set", async () => {
  const home = newHome();
  for (const args of [["update"], ["update", "--check"]]) {
    const result = await home.run(args);
    expect({ args, code: result.code, lines: result.stdout.trim().split("\n").length, error: result.json.error.code }).toEqual({ args, code: 1, lines: 1, error: "UPDATE_FAILED" });
    expect(result.json.error.message).toContain("BERTH_RELEASE_BASE_URL");
    expect(result.stderr).toContain(result.json.error.message);
  }
  // Recorded as the loop records a failed check: the code in status, one line per check in updater.log.
  expect((await home.run(["status"])).json.updater.lastCheck).toMatchObject({ outcome: "failed", code: "UPDATE_FAILED" });
  const lines = readFileSync(home.path("daemon", "updater.log"), "utf8").trimEnd().split("\n");
  expect(lines).toHaveLength(2);
  for (const line of lines) expect(line).toMatch(/^\S+Z manual update \(pid \d+\): failed: UPDATE_FAILED: no release base URL/);
});
