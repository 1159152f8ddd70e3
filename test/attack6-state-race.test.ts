/**
 * updater-state.json is changed by the update step, a keeper step (a rollback's quarantine) and a manual
 * `update`, at the same time. Each change read the file, changed it and wrote it back: one made from a stale
 * read dropped what another had just written (seen: the keeper's quarantine of a crash-looping release lost,
 * so the loop installed it again). changeUpdaterState serializes them with a flock. Real processes racing.
 */
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readUpdaterState } from "../src/daemon/updater.ts";
import { BUN, ROOT } from "./helpers/berth.ts";

const CHANGES_EACH = 150;
const TEST_TIMEOUT_MS = 60_000;
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A process making `CHANGES_EACH` changes: quarantining versions `<major>.0.<i>`, or recording checks. */
function racer(path: string, kind: "quarantine" | "check", major: number) {
  const module = join(ROOT, "src", "daemon", "updater.ts");
  const change =
    kind === "quarantine"
      ? `(s) => withQuarantined(s, "${major}.0." + i)`
      : `(s) => ({ ...s, lastCheck: { at: new Date().toISOString(), outcome: "upToDate", message: "check " + i } })`;
  const code = `import { changeUpdaterState, withQuarantined } from ${JSON.stringify(module)};\nfor (let i = 0; i < ${CHANGES_EACH}; i++) changeUpdaterState(${JSON.stringify(path)}, ${change});\n`;
  return Bun.spawn([BUN, "-e", code], { stdout: "ignore", stderr: "pipe" });
}

test(
  "three writers at once: every quarantine each of them made is still there",
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-a6-state-"));
    dirs.push(dir);
    const path = join(dir, "updater-state.json");
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
