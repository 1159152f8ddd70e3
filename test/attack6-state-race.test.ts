/**
 * updater-state.json is changed by the update step, a keeper step (a rollback's quarantine) and a manual
 * `update`, at the same time. Each change read the file, changed it and wrote it back: one made from a stale
 * read dropped what another had just written (seen: the keeper's quarantine of a crash-looping release lost,
 * so the loop installed it again). changeUpdaterState serializes them with a flock. Real processes racing.
 */
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { readUpdaterState } from "../src/daemon/updater.ts";
import { BUN, ROOT, childrenKilledPerTest, tempDirsPerTest } from "./helpers/berth.ts";

const CHANGES_EACH = 150;
const TEST_TIMEOUT_MS = 60_000;
// Registered first, so it runs first: a racer left by a timed-out test is killed before its folder is removed.
const started = childrenKilledPerTest(afterEach);
const tempDir = tempDirsPerTest(afterEach, "berth-a6-state-");

/** A process making `CHANGES_EACH` changes: quarantining versions `<major>.0.<i>`, or recording checks. */
function racer(path: string, kind: "quarantine" | "check", major: number) {
  const module = join(ROOT, "src", "daemon", "updater.ts");
  const change =
    kind === "quarantine"
      ? `(s) => withQuarantined(s, "${major}.0." + i)`
      : `(s) => ({ ...s, lastCheck: { at: new Date().toISOString(), outcome: "upToDate", message: "check " + i } })`;
  const code = `import { changeUpdaterState, withQuarantined } from ${JSON.stringify(module)};\nfor (let i = 0; i < ${CHANGES_EACH}; i++) changeUpdaterState(${JSON.stringify(path)}, ${change});\n`;
  const child = Bun.spawn([BUN, "-e", code], { stdout: "ignore", stderr: "pipe" });
  started.push(child);
  return child;
}

test(
  "three writers at once: every quarantine each of them made is still there",
  async () => {
    const path = join(tempDir(), "updater-state.json");
    const racers = [racer(path, "quarantine", 7), racer(path, "quarantine", 8), racer(path, "check", 0)];
    const codes = await Promise.all(racers.map((r) => r.exited));
    const errors = await Promise.all(racers.map((r) => new Response(r.stderr).text()));
    expect({ codes, errors }).toEqual({ codes: [0, 0, 0], errors: ["", "", ""] });
    const quarantined = readUpdaterState(path).quarantined;
    expect(quarantined.length).toBe(2 * CHANGES_EACH);
    expect(readUpdaterState(path).lastCheck?.message).toBe(`check ${CHANGES_EACH - 1}`);
  },
  TEST_TIMEOUT_MS,
);
