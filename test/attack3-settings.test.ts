/**
 * Edge cases of this round's spec-audit fixes. `stop`, `down` and so `uninstall` take defaults for a corrupt
 * settings.json (settings are never needed to stop); a settings.json berth will not read at all — a symlink
 * into a dotfiles folder, a FIFO — must not keep the app-server and its keeper running either, and is left
 * as it is (berth still neither follows nor reads it).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventually, homesPerTest, isAlive, keepersOf, serversOf } from "./helpers/berth.ts";

const TEST_TIMEOUT_MS = 90_000;
/** Processes asked to stop are gone within this (a failing run only waits it out). */
const GONE_WAIT_MS = 20_000;

const newHome = homesPerTest(afterEach);

describe("stop, down and uninstall with a settings.json berth will not read (UNSAFE_STATE)", () => {
  test("a symlink (dotfiles): stop and down stop everything with defaults, the link untouched; start still refuses it", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    expect(await eventually(() => keepersOf(home).length === 1)).toBe(true);
    const keeper = keepersOf(home)[0] as number;
    const target = join(home.env.HOME as string, "dotfiles-settings.json");
    writeFileSync(target, JSON.stringify({ stopGraceMs: 5_000 }));
    const settings = home.path("daemon", "settings.json");
    rmSync(settings, { force: true });
    symlinkSync(target, settings);

    const stop = await home.run(["stop"]);
    expect(stop.json).toMatchObject({ status: "stopped" });
    expect(stop.stderr).toContain("settings.json is a symbolic link");
    expect(await eventually(() => !isAlive(started.json.pid), GONE_WAIT_MS)).toBe(true);

    // What needs settings still refuses them, naming the file.
    const start = await home.run(["start"]);
    expect(start.json.error).toMatchObject({ code: "UNSAFE_STATE", message: expect.stringContaining("settings.json is a symbolic link") });
    expect(serversOf(home)).toEqual([]);

    const down = await home.run(["down"]);
    // The keeper may have ended on its own (its step cannot read the settings either): gone, either way.
    expect(down.json).toMatchObject({ status: "down", appServer: "notRunning", keeper: expect.stringMatching(/^(stopped|notRunning)$/) });
    expect(await eventually(() => !isAlive(keeper), GONE_WAIT_MS)).toBe(true);
    expect(lstatSync(settings).isSymbolicLink()).toBe(true);
    expect(readlinkSync(settings)).toBe(target);
    expect(readFileSync(target, "utf8")).toBe(JSON.stringify({ stopGraceMs: 5_000 }));

    const uninstalled = await home.run(["uninstall"]);
    expect(uninstalled.json).toMatchObject({ status: "uninstalled" });
    expect(existsSync(home.home)).toBe(false);
    // Never followed: the file it named is still there.
    expect(existsSync(target)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("a FIFO: down stops the app-server and the keeper without blocking on it", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    expect(await eventually(() => keepersOf(home).length === 1)).toBe(true);
    const settings = home.path("daemon", "settings.json");
    rmSync(settings, { force: true });
    expect(Bun.spawnSync(["mkfifo", settings]).exitCode).toBe(0);
    const down = await home.run(["down"]);
    expect(down.json).toMatchObject({ status: "down", appServer: "stopped", keeper: expect.stringMatching(/^(stopped|notRunning)$/) });
    expect(down.stderr).toContain("settings.json is a FIFO");
    expect(await eventually(() => serversOf(home).length === 0 && keepersOf(home).length === 0, GONE_WAIT_MS)).toBe(true);
    expect(lstatSync(settings).isFIFO()).toBe(true);
  }, TEST_TIMEOUT_MS);
});
