/**
 * SPEC "Settings": a value of the wrong type is STATE_CORRUPT naming the key, never a crash and never a silent
 * reset. null is such a value: defu takes it for "missing" and filled in the default without a word.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { nullSettings } from "../src/daemon/settings.ts";
import { homesPerTest, serversOf } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);

describe("known keys set to null (pure)", () => {
  const cases: { stored: Record<string, unknown>; nulls: string[] }[] = [
    { stored: {}, nulls: [] },
    { stored: { startTimeoutMs: null }, nulls: ["startTimeoutMs"] },
    { stored: { update: null }, nulls: ["update"] },
    { stored: { update: { intervalMs: null, initialDelayMs: 5 } }, nulls: ["update.intervalMs"] },
    { stored: { remoteControl: { listen: null, tls: null } }, nulls: ["remoteControl.listen", "remoteControl.tls"] },
    { stored: { tunnels: null }, nulls: ["tunnels"] },
    { stored: { tunnels: { allowHosts: null } }, nulls: ["tunnels.allowHosts"] },
    { stored: { processes: { max: null }, logs: { keep: null } }, nulls: ["processes.max", "logs.keep"] },
    // The user's own keys are kept as written, null or not; a wrong type elsewhere is checkTypes' to report.
    { stored: { myNote: null, update: { myKey: null } }, nulls: [] },
    { stored: { update: 5, logs: [null] }, nulls: [] },
  ];
  for (const { stored, nulls } of cases) test(JSON.stringify(stored), () => expect(nullSettings(stored)).toEqual(nulls));
});

test("start with a null setting: STATE_CORRUPT naming each key, the file untouched, nothing started; status says so and exits 0", async () => {
  const text = '{"stopGraceMs": null, "update": {"intervalMs": null}, "mine": null}';
  const home = newHome({ settings: {} });
  const path = home.path("daemon", "settings.json");
  await Bun.write(path, text);
  const start = await home.run(["start"]);
  expect({ code: start.code, error: start.json.error?.code }).toEqual({ code: 1, error: "STATE_CORRUPT" });
  expect(start.json.error.message).toContain(path);
  expect(start.json.error.message).toContain("stopGraceMs must not be null");
  expect(start.json.error.message).toContain("update.intervalMs must not be null");
  expect(start.json.error.message).not.toContain("mine");
  expect(readFileSync(path, "utf8")).toBe(text);
  expect(serversOf(home)).toEqual([]);
  const status = await home.run(["status"]);
  expect(status.code).toBe(0);
  expect(status.json.problems.join("\n")).toContain("stopGraceMs must not be null");
});
