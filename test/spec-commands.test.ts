// Rules of SPEC.md "Commands", "Settings" and "Connecting" that other tests
// check only in part: the exact fields of the lifecycle, bootstrap and
// remote-control success objects ("fields always present unless marked ?"),
// the settings defaults and their environment overrides as `status` reports
// them, and `connect` to a running app-server taking no lock.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { BUN, MAIN, eventually, isAlive, keepersOf, makeHome, serversOf, type RunResult, type TestHome } from "./helpers/berth.ts";
import { CONNECT_WAIT_MS, spawnConnect, type ConnectClient } from "./helpers/connect.ts";
import { holdLock, type Holder } from "./helpers/holder.ts";

const TEST_TIMEOUT_MS = 120_000;
/** Short, so a command that waited for daemon.lock would fail fast with LOCK_TIMEOUT instead of passing late. */
const SHORT_LOCK_WAIT_MS = "300";

const homes: TestHome[] = [];
const holders: Holder[] = [];
const bridges: ConnectClient[] = [];

afterEach(async () => {
  for (const bridge of bridges.splice(0)) bridge.kill();
  for (const holder of holders.splice(0)) await holder.kill();
  for (const home of homes.splice(0)) {
    await home.run(["down"]);
    await home.cleanup();
  }
});

function newHome(settings: object = { stopGraceMs: 3_000 }): TestHome {
  const home = makeHome({ prefix: "berth-spec-cmd-", settings });
  homes.push(home);
  return home;
}

/** `berth connect ARGS` of `home`, killed after the test if still running. */
function connectBridge(home: TestHome, args: string[] = [], env: Record<string, string> = {}): ConnectClient {
  const bridge = spawnConnect([BUN, MAIN, "connect", ...args], { ...home.env, ...env });
  bridges.push(bridge);
  return bridge;
}

/** stdin EOF: the bridge closes normally and exits 0 (SPEC 'Connecting'). */
async function endBridge(bridge: ConnectClient): Promise<void> {
  bridge.proc.stdin.end();
  expect(await bridge.exited).toBe(0);
}

/** `required` all present, nothing outside `required` + `optional`; one JSON line on stdout; exit 0. */
function expectShape(result: RunResult, required: string[], optional: string[]): void {
  expect({ code: result.code, lines: result.stdout.trim().split("\n").length }).toEqual({ code: 0, lines: 1 });
  const keys = Object.keys(result.json);
  expect(required.filter((key) => !keys.includes(key))).toEqual([]);
  expect(keys.filter((key) => !required.includes(key) && !optional.includes(key))).toEqual([]);
}

// SPEC "Commands": lifecycle (start, stop, restart, version).
const LIFECYCLE_REQUIRED = ["status", "backend", "managedBinaryPath", "managedVersion", "socketPath", "cliVersion"];
const LIFECYCLE_OPTIONAL = ["pid", "appServerVersion"];
// SPEC "Processes and terminals": stop/restart/down "report processesEnded: N in their JSON"; notEnded names stragglers.
const STOP_EXTRAS = ["processesEnded", "notEnded"];

describe("success objects (SPEC 'Commands': fields always present unless marked ?)", () => {
  test("start, start again, version, restart, stop, stop again", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expectShape(started, LIFECYCLE_REQUIRED, LIFECYCLE_OPTIONAL);
    expect(started.json).toMatchObject({ status: "started", backend: "pid", cliVersion: "0.1.0" });
    const again = await home.run(["start"]);
    expectShape(again, LIFECYCLE_REQUIRED, LIFECYCLE_OPTIONAL);
    expect(again.json.status).toBe("alreadyRunning");
    const version = await home.run(["version"]);
    expectShape(version, LIFECYCLE_REQUIRED, LIFECYCLE_OPTIONAL);
    expect(version.json).toMatchObject({ status: "running", backend: "pid", pid: started.json.pid, appServerVersion: "0.1.0" });
    const restarted = await home.run(["restart"]);
    expectShape(restarted, LIFECYCLE_REQUIRED, [...LIFECYCLE_OPTIONAL, ...STOP_EXTRAS]);
    expect(restarted.json).toMatchObject({ status: "restarted", backend: "pid", processesEnded: 0 });
    const stopped = await home.run(["stop"]);
    expectShape(stopped, LIFECYCLE_REQUIRED, [...LIFECYCLE_OPTIONAL, ...STOP_EXTRAS]);
    expect(stopped.json).toMatchObject({ status: "stopped", backend: null, processesEnded: 0 });
    const notRunning = await home.run(["stop"]);
    expectShape(notRunning, LIFECYCLE_REQUIRED, [...LIFECYCLE_OPTIONAL, ...STOP_EXTRAS]);
    expect(notRunning.json).toMatchObject({ status: "notRunning", backend: null });
  }, TEST_TIMEOUT_MS);

  test("bootstrap, enable-remote-control, disable-remote-control", async () => {
    const home = newHome();
    const boot = await home.run(["bootstrap", "--no-auto-update"]);
    expectShape(
      boot,
      ["status", "backend", "autoUpdateEnabled", "remoteControlEnabled", "managedBinaryPath", "managedVersion", "socketPath", "cliVersion", "appServerVersion"],
      ["pid", "remoteControl", "updater"],
    );
    expect(boot.json).toMatchObject({ status: "bootstrapped", backend: "pid", autoUpdateEnabled: false, remoteControlEnabled: false, appServerVersion: "0.1.0" });

    const REMOTE_REQUIRED = ["status", "remoteControlEnabled", "socketPath", "cliVersion"];
    const REMOTE_OPTIONAL = ["backend", "appServerVersion", "remoteControl"];
    const enabled = await home.run(["enable-remote-control"]);
    expectShape(enabled, REMOTE_REQUIRED, REMOTE_OPTIONAL);
    expect(enabled.json).toMatchObject({ status: "enabled", backend: "pid", remoteControlEnabled: true, appServerVersion: "0.1.0" });
    expect(Object.keys(enabled.json.remoteControl).sort()).toEqual(["tokenPath", "url"]);
    expect(enabled.json.remoteControl.tokenPath).toBe(home.path("daemon", "remote-control.token"));
    const disabled = await home.run(["disable-remote-control"]);
    expectShape(disabled, REMOTE_REQUIRED, REMOTE_OPTIONAL);
    expect(disabled.json).toMatchObject({ status: "disabled", remoteControlEnabled: false });
    expect(disabled.json).not.toHaveProperty("remoteControl");
    const again = await home.run(["disable-remote-control"]);
    expectShape(again, REMOTE_REQUIRED, REMOTE_OPTIONAL);
    expect(again.json.status).toBe("alreadyDisabled");
  }, TEST_TIMEOUT_MS);
});

describe("camelCase keys (SPEC 'Commands': one JSON object, camelCase keys)", () => {
  /** Paths of keys that are not camelCase; `settings` echoes the user's own file and is not walked. */
  function nonCamel(value: unknown, path = ""): string[] {
    if (Array.isArray(value)) return value.flatMap((item, i) => nonCamel(item, `${path}[${i}]`));
    if (!value || typeof value !== "object") return [];
    return Object.entries(value).flatMap(([key, item]) => [
      ...(/^[a-z][a-zA-Z0-9]*$/.test(key) ? [] : [`${path}.${key}`]),
      ...(key === "settings" ? [] : nonCamel(item, `${path}.${key}`)),
    ]);
  }

  test("in the objects of status, start, version, logs, doctor, stop, down and an error", async () => {
    const home = newHome();
    for (const args of [["status"], ["start"], ["version"], ["status"], ["logs", "-n", "1"], ["doctor"], ["stop"], ["down"], ["version"]]) {
      const result = await home.run(args);
      expect({ args, bad: nonCamel(result.json) }).toEqual({ args, bad: [] });
    }
  }, TEST_TIMEOUT_MS);
});

describe("settings (SPEC 'Settings')", () => {
  // The defaults the spec names, as `status` reports the loaded settings. Written out, not imported from
  // settings.ts: a default changed there against the spec must fail here.
  const SPEC_DEFAULTS = {
    remoteControlEnabled: false,
    startTimeoutMs: 10_000,
    stopGraceMs: 60_000,
    update: { initialDelayMs: 300_000, intervalMs: 3_600_000, maxRestartDeferMs: 86_400_000 },
    remoteControl: { listen: "127.0.0.1:0" },
    logs: { maxBytes: 8 * 1024 * 1024, keep: 3 },
    processes: { scrollbackBytes: 2 * 1024 * 1024, max: 64, retainExitedMs: 86_400_000 },
  };

  test("without settings.json: the spec's defaults; the environment overrides win and are not saved", async () => {
    const home = makeHome({ prefix: "berth-spec-cmd-" });
    homes.push(home);
    const plain = await home.run(["status"]);
    expect(plain.json.settings).toMatchObject(SPEC_DEFAULTS);
    const env = { BERTH_RELEASE_BASE_URL: "file:///nowhere", BERTH_UPDATE_INITIAL_DELAY_MS: "1234", BERTH_UPDATE_INTERVAL_MS: "5678" };
    const overridden = await home.run(["status"], { env });
    expect(overridden.json.settings).toMatchObject({ releaseBaseUrl: "file:///nowhere", update: { initialDelayMs: 1234, intervalMs: 5678, maxRestartDeferMs: 86_400_000 } });
    expect(existsSync(home.path("daemon", "settings.json"))).toBe(false);
  }, TEST_TIMEOUT_MS);
});

describe("settings of the wrong type (SPEC 'Settings': STATE_CORRUPT naming the key, never a silent acceptance)", () => {
  test("remoteControl.tls that is not {cert, key}: start refuses even with remote control off, and nothing runs", async () => {
    for (const tls of [5, "cert.pem", { cert: "/c.pem" }, { cert: "", key: "/k.pem" }]) {
      const home = newHome({ remoteControl: { tls } });
      const start = await home.run(["start"]);
      expect({ tls, code: start.code, error: start.json.error?.code }).toEqual({ tls, code: 1, error: "STATE_CORRUPT" });
      expect(start.json.error.message).toContain("remoteControl.tls");
      expect(serversOf(home)).toEqual([]);
    }
  }, TEST_TIMEOUT_MS);

  test("tunnels that is not an object: STATE_CORRUPT naming it (it has no default for defu to fill in)", async () => {
    for (const tunnels of [5, "127.0.0.1", ["localhost"]]) {
      const home = newHome({ tunnels });
      const start = await home.run(["start"]);
      expect({ tunnels, code: start.code, error: start.json.error?.code }).toEqual({ tunnels, code: 1, error: "STATE_CORRUPT" });
      expect(start.json.error.message).toContain("tunnels must be an object");
    }
  }, TEST_TIMEOUT_MS);
});

describe("connect (SPEC 'Connecting')", () => {
  test("to a running app-server while another process holds daemon.lock: connected at once, and the API answers ('connect holds no lock once connected')", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    holders.push(await holdLock(home.path("daemon", "daemon.lock")));
    // Proof the lock is held: a command that takes it fails.
    expect((await home.run(["restart"], { env: { BERTH_LOCK_WAIT_MS: SHORT_LOCK_WAIT_MS } })).json.error.code).toBe("LOCK_TIMEOUT");
    const bridge = connectBridge(home, [], { BERTH_LOCK_WAIT_MS: SHORT_LOCK_WAIT_MS });
    expect(await bridge.waitConnected(CONNECT_WAIT_MS)).toMatchObject({ status: "connected", pid: started.json.pid });
    expect((await bridge.initialize()).pid).toBe(started.json.pid);
    expect((await bridge.call("process/list")).processes).toEqual([]);
    await endBridge(bridge);
  }, TEST_TIMEOUT_MS);

  test("connect starts the app-server 'exactly as start': wanted running, the keeper launched; --no-start then connects to it", async () => {
    const home = newHome();
    const first = connectBridge(home);
    const line = await first.waitConnected(CONNECT_WAIT_MS);
    const status = await home.run(["status"]);
    expect(status.json.appServer).toMatchObject({ state: "running", pid: line.pid, wanted: "running" });
    expect(await eventually(() => keepersOf(home).length === 1, 20_000)).toBe(true);
    await endBridge(first);

    const second = connectBridge(home, ["--no-start"]);
    expect(await second.waitConnected(CONNECT_WAIT_MS)).toMatchObject({ status: "connected", pid: line.pid });
    await endBridge(second);
  }, TEST_TIMEOUT_MS);
});

describe("down and uninstall with a corrupt settings.json (like stop: settings are never needed to stop)", () => {
  test("down stops the app-server and the keeper, leaving the file as it was; uninstall then removes everything", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    // Corrupted once the keeper watches, so `down` has a running keeper to stop (a keeper that starts on a corrupt file keeps, see spec-supervision).
    const watching = () => existsSync(home.path("daemon", "updater.log")) && readFileSync(home.path("daemon", "updater.log"), "utf8").includes("watching app-server pid");
    expect(await eventually(() => keepersOf(home).length === 1 && watching(), 20_000)).toBe(true);
    const keeper = keepersOf(home)[0] as number;
    writeFileSync(home.path("daemon", "settings.json"), "{ not json");
    const down = await home.run(["down"]);
    expect(down.json).toMatchObject({ status: "down", appServer: "stopped", keeper: "stopped" });
    expect(down.stderr).toContain("settings.json");
    expect(await eventually(() => !isAlive(started.json.pid) && !isAlive(keeper), 20_000)).toBe(true);
    expect(serversOf(home)).toEqual([]);
    expect(readFileSync(home.path("daemon", "settings.json"), "utf8")).toBe("{ not json");
    const uninstalled = await home.run(["uninstall"]);
    expect(uninstalled.json).toMatchObject({ status: "uninstalled", stopped: { appServer: "notRunning", keeper: "notRunning" } });
    expect(existsSync(home.home)).toBe(false);
  }, TEST_TIMEOUT_MS);
});
