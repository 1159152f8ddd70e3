/**
 * SPEC "Commands", `status`: everything known, running or not — here, the installed releases, which no other
 * test read from status.
 */
import { afterEach, expect, test } from "bun:test";
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
