/**
 * Remote control end to end: `enable-remote-control`, `disable-remote-control`
 * and `bootstrap --remote-control` as real `berth` processes, a real
 * app-server listening on TCP behind a bearer token, and a from-scratch
 * WebSocket client knocking on that port with and without the token.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { eventually, isAlive, keepersOf, makeHome, processesOf, readJson, type RunResult, type TestHome } from "./helpers/berth.ts";
import { connectTcp, httpRequest, UpgradeRefused, type RawWs } from "./helpers/raw-ws.ts";

const CLIENT_INFO = { name: "remote-control-test", version: "1.0.0" };
/** A connection, reply or close on the loopback endpoint: generous for a loaded machine. */
const CONNECT_TIMEOUT_MS = 15_000;
const URL_PATTERN = /^ws:\/\/127\.0\.0\.1:(\d+)\/$/;

/** A test home whose every berth invocation is recorded, so the token can be searched for in all output. */
type Session = {
  home: TestHome;
  run(args: string[]): Promise<RunResult>;
  /** stdout+stderr of every command run so far. */
  outputs: string[];
};

const sessions: Session[] = [];
const clients: RawWs[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  for (const session of sessions.splice(0)) await session.home.cleanup();
});

function newSession(options: Parameters<typeof makeHome>[0] = {}): Session {
  const home = makeHome({ prefix: "berth-rc-", ...options });
  const outputs: string[] = [];
  const session: Session = {
    home,
    outputs,
    async run(args) {
      const result = await home.run(args);
      outputs.push(`$ berth ${args.join(" ")}\n${result.stdout}\n${result.stderr}`);
      return result;
    },
  };
  sessions.push(session);
  return session;
}

function tokenOf(session: Session): string {
  return readFileSync(session.home.path("daemon/remote-control.token"), "utf8").trim();
}

function endpointOf(url: string): { hostname: string; port: number } {
  const match = URL_PATTERN.exec(url);
  if (!match) throw new Error(`not a remote-control URL: ${url}`);
  const port = Number(match[1]);
  expect(port).toBeGreaterThan(0);
  return { hostname: "127.0.0.1", port };
}

/** Opens the TCP endpoint with the given headers, completes `initialize`, and returns its result. */
async function initializeOver(url: string, headers: Record<string, string>): Promise<any> {
  const { hostname, port } = endpointOf(url);
  const ws = await connectTcp(hostname, port, { headers, timeoutMs: CONNECT_TIMEOUT_MS });
  clients.push(ws);
  const reply = await ws.request({ method: "initialize", params: { clientInfo: CLIENT_INFO } }, CONNECT_TIMEOUT_MS);
  expect(reply.error).toBeUndefined();
  ws.send(JSON.stringify({ jsonrpc: "2.0", method: "initialized" }));
  await ws.close(1000, CONNECT_TIMEOUT_MS);
  return reply.result;
}

/** The upgrade is refused: returns the HTTP status (fails the test if it was accepted). */
async function refusedStatus(url: string, headers: Record<string, string>): Promise<number> {
  const { hostname, port } = endpointOf(url);
  try {
    const ws = await connectTcp(hostname, port, { headers, timeoutMs: CONNECT_TIMEOUT_MS });
    clients.push(ws);
  } catch (error) {
    if (error instanceof UpgradeRefused) return error.status;
    throw error;
  }
  throw new Error(`the upgrade with headers ${JSON.stringify(Object.keys(headers))} was accepted`);
}

/** Connecting to the port fails outright (nothing listens there any more). */
async function connectionRefused(url: string): Promise<boolean> {
  const { hostname, port } = endpointOf(url);
  try {
    const ws = await connectTcp(hostname, port, { timeoutMs: CONNECT_TIMEOUT_MS });
    clients.push(ws);
    return false;
  } catch (error) {
    if (error instanceof UpgradeRefused) return false;
    return (error as { code?: string }).code === "ECONNREFUSED";
  }
}

/** A command's `remoteControl`: a loopback URL and the token file's path. Returns the URL. */
function remoteControlUrlOf(session: Session, json: any): string {
  // (Read values before toMatchObject: bun 1.4.5's toMatchObject writes asymmetric matchers into the received object.)
  const url = json.remoteControl?.url as string;
  expect(url).toMatch(URL_PATTERN);
  expect(json.remoteControl).toMatchObject({ url, tokenPath: session.home.path("daemon/remote-control.token") });
  return url;
}

function appServerPid(session: Session): number {
  return readJson(session.home.path("daemon/app-server.pid")).pid as number;
}

/** The token must not appear in any command's output nor in any log. */
function expectTokenNeverShown(session: Session, token: string): void {
  expect(token.length).toBeGreaterThanOrEqual(32);
  const texts = [...session.outputs];
  for (const log of ["daemon/app-server.log", "daemon/updater.log"]) {
    const path = session.home.path(log);
    if (existsSync(path)) texts.push(`${log}:\n${readFileSync(path, "utf8")}`);
  }
  expect(texts.length).toBeGreaterThan(0);
  for (const text of texts) {
    if (text.includes(token)) throw new Error(`the remote-control token leaked into:\n${text.slice(0, 2_000)}`);
  }
}

describe("enable-remote-control / disable-remote-control", () => {
  test("enable with the app-server stopped persists the setting (keeping unknown keys) and creates a 0600 token; again is alreadyEnabled", async () => {
    const session = newSession({ settings: { myKey: 1 } });
    const settingsPath = session.home.path("daemon/settings.json");
    const tokenPath = session.home.path("daemon/remote-control.token");

    const enabled = await session.run(["enable-remote-control"]);
    expect(enabled.code).toBe(0);
    expect(enabled.stdout.trim().split("\n")).toHaveLength(1);
    expect(enabled.json).toMatchObject({
      status: "enabled",
      remoteControlEnabled: true,
      socketPath: session.home.path("daemon/app-server.sock"),
    });
    expect(typeof enabled.json.cliVersion).toBe("string");
    // Nothing was running, so nothing was started.
    expect(enabled.json.backend).toBeUndefined();
    expect(enabled.json.remoteControl).toBeUndefined();
    expect(existsSync(session.home.path("daemon/app-server.pid"))).toBe(false);

    expect(readJson(settingsPath)).toEqual({ myKey: 1, remoteControlEnabled: true });
    expect(statSync(settingsPath).mode & 0o777).toBe(0o600);
    expect(statSync(tokenPath).mode & 0o777).toBe(0o600);
    const token = tokenOf(session);
    expect(token).toMatch(/^[A-Za-z0-9_-]{32,}$/);

    const again = await session.run(["enable-remote-control"]);
    expect(again.code).toBe(0);
    expect(again.json).toMatchObject({ status: "alreadyEnabled", remoteControlEnabled: true });
    expect(readJson(settingsPath)).toEqual({ myKey: 1, remoteControlEnabled: true });
    expect(tokenOf(session)).toBe(token);

    const status = await session.run(["status"]);
    expect(status.json.settings).toMatchObject({ remoteControlEnabled: true, myKey: 1 });
    expectTokenNeverShown(session, token);
  });

  test("start serves the API on TCP: the token opens it, no token or a wrong one gets 401", async () => {
    const session = newSession();
    expect((await session.run(["enable-remote-control"])).json.status).toBe("enabled");
    const started = await session.run(["start"]);
    expect(started.json).toMatchObject({ status: "started", backend: "pid" });

    const status = await session.run(["status"]);
    const url = status.json.appServer.remoteControl?.url as string;
    expect(url).toMatch(URL_PATTERN);
    expect(status.json.appServer.remoteControl).toEqual({ enabled: true, url });
    const token = tokenOf(session);

    const info = await initializeOver(url, { Authorization: `Bearer ${token}` });
    expect(info).toMatchObject({
      serverInfo: { name: "berth", version: "0.1.0" },
      pid: started.json.pid,
      berthHome: session.home.home,
      remoteControl: { enabled: true, url },
    });

    expect(await refusedStatus(url, {})).toBe(401);
    const plain = await httpRequest(endpointOf(url), { timeoutMs: CONNECT_TIMEOUT_MS });
    expect(plain.status).toBe(401);
    expect(plain.body).not.toContain(token);

    const last = token.at(-1) === "A" ? "B" : "A";
    const sameLength = `${token.slice(0, -1)}${last}`;
    expect(sameLength).toHaveLength(token.length);
    expect(sameLength).not.toBe(token);
    expect(await refusedStatus(url, { Authorization: `Bearer ${sameLength}` })).toBe(401);
    expect(await refusedStatus(url, { Authorization: `Bearer ${token}x` })).toBe(401);
    expect(await refusedStatus(url, { Authorization: `Bearer ${token.slice(0, 8)}` })).toBe(401);
    expect(await refusedStatus(url, { Authorization: "Bearer " })).toBe(401);
    expect(await refusedStatus(url, { Authorization: `Basic ${token}` })).toBe(401);
    expect(await refusedStatus(url, { Authorization: token })).toBe(401);

    // The refused clients did not take the server down: the token still works on the same process.
    const after = await initializeOver(url, { Authorization: `Bearer ${token}` });
    expect(after.pid).toBe(started.json.pid);
    expect(isAlive(started.json.pid)).toBe(true);
    // Nor is it handed to the app-server where other users could read it (command line) or in its environment.
    expect(readFileSync(`/proc/${started.json.pid}/cmdline`, "utf8")).not.toContain(token);
    expect(readFileSync(`/proc/${started.json.pid}/environ`, "utf8")).not.toContain(token);
    expectTokenNeverShown(session, token);
  });

  test("with the app-server running: enable restarts it onto TCP, disable restarts it off TCP; both are idempotent", async () => {
    const session = newSession();
    const started = await session.run(["start"]);
    expect(started.json.status).toBe("started");
    const firstPid = started.json.pid as number;
    expect((await session.run(["status"])).json.appServer.remoteControl).toEqual({ enabled: false });

    const enabled = await session.run(["enable-remote-control"]);
    expect(enabled.code).toBe(0);
    const url = remoteControlUrlOf(session, enabled.json);
    expect(enabled.json).toMatchObject({ status: "enabled", backend: "pid", remoteControlEnabled: true, appServerVersion: "0.1.0" });
    const secondPid = appServerPid(session);
    expect(secondPid).not.toBe(firstPid);
    expect(isAlive(firstPid)).toBe(false);
    expect(isAlive(secondPid)).toBe(true);
    const token = tokenOf(session);
    const info = await initializeOver(url, { Authorization: `Bearer ${token}` });
    expect(info).toMatchObject({ pid: secondPid, remoteControl: { enabled: true, url } });
    expect((await session.run(["status"])).json.appServer).toMatchObject({ pid: secondPid, remoteControl: { enabled: true, url } });

    const alreadyEnabled = await session.run(["enable-remote-control"]);
    expect(alreadyEnabled.json).toMatchObject({ status: "alreadyEnabled", backend: "pid", remoteControl: { url } });
    expect(appServerPid(session)).toBe(secondPid);

    const disabled = await session.run(["disable-remote-control"]);
    expect(disabled.code).toBe(0);
    expect(disabled.json).toMatchObject({ status: "disabled", backend: "pid", remoteControlEnabled: false, appServerVersion: "0.1.0" });
    expect(disabled.json.remoteControl).toBeUndefined();
    const thirdPid = appServerPid(session);
    expect(thirdPid).not.toBe(secondPid);
    expect(isAlive(secondPid)).toBe(false);
    expect(isAlive(thirdPid)).toBe(true);
    expect(await connectionRefused(url)).toBe(true);
    expect(readJson(session.home.path("daemon/settings.json"))).toEqual({ remoteControlEnabled: false });
    const status = await session.run(["status"]);
    expect(status.json.appServer).toMatchObject({ state: "running", pid: thirdPid, answering: true });
    expect(status.json.appServer.remoteControl).toEqual({ enabled: false });
    // The token stays on disk for a later enable.
    expect(tokenOf(session)).toBe(token);

    const alreadyDisabled = await session.run(["disable-remote-control"]);
    expect(alreadyDisabled.json).toMatchObject({ status: "alreadyDisabled", remoteControlEnabled: false, backend: "pid" });
    expect(appServerPid(session)).toBe(thirdPid);
    expectTokenNeverShown(session, token);
  });

  test("the token is kept across restart and across disable + enable", async () => {
    const session = newSession();
    const enabled = await session.run(["enable-remote-control"]);
    expect(enabled.json.status).toBe("enabled");
    const tokenFile = () => readFileSync(session.home.path("daemon/remote-control.token"), "utf8");
    const original = tokenFile();
    const token = original.trim();

    const started = await session.run(["start"]);
    expect(started.json.status).toBe("started");
    expect(tokenFile()).toBe(original);

    const restarted = await session.run(["restart"]);
    expect(restarted.json.status).toBe("restarted");
    expect(restarted.json.pid).not.toBe(started.json.pid);
    expect(tokenFile()).toBe(original);
    const afterRestart = (await session.run(["status"])).json.appServer.remoteControl.url as string;
    expect((await initializeOver(afterRestart, { Authorization: `Bearer ${token}` })).pid).toBe(restarted.json.pid);

    expect((await session.run(["disable-remote-control"])).json.status).toBe("disabled");
    expect(tokenFile()).toBe(original);
    const reenabled = await session.run(["enable-remote-control"]);
    expect(reenabled.json.status).toBe("enabled");
    expect(tokenFile()).toBe(original);
    const url = reenabled.json.remoteControl.url as string;
    expect((await initializeOver(url, { Authorization: `Bearer ${token}` })).remoteControl.url).toBe(url);

    expect((await session.run(["stop"])).json.status).toBe("stopped");
    expect(await connectionRefused(url)).toBe(true);
    expect(tokenFile()).toBe(original);
    expectTokenNeverShown(session, token);
  });

  test("the token appears in no output and no log across a full session", async () => {
    const session = newSession({ settings: { stopGraceMs: 5_000 } });
    for (const args of [
      ["bootstrap", "--remote-control", "--no-auto-update"],
      ["status"],
      ["version"],
      ["start"],
      ["restart"],
      ["enable-remote-control"],
      ["disable-remote-control"],
      ["enable-remote-control"],
      ["status"],
      ["enable-remote-control", "--help"],
      ["enable-remote-control", "--bogus"],
    ]) {
      const result = await session.run(args);
      if (args[1] === "--bogus") expect(result.json.error.code).toBe("USAGE");
      else expect(result.code).toBe(0);
    }
    const token = tokenOf(session);
    const url = (await session.run(["status"])).json.appServer.remoteControl.url as string;
    // Refused and accepted clients leave their traces in the app-server log, not the token.
    expect(await refusedStatus(url, { Authorization: `Bearer ${token}x` })).toBe(401);
    await initializeOver(url, { Authorization: `Bearer ${token}` });
    expect((await session.run(["stop"])).json.status).toBe("stopped");
    expect(readFileSync(session.home.path("daemon/app-server.log"), "utf8")).toContain(url);
    expectTokenNeverShown(session, token);
  });
});

describe("bootstrap --remote-control", () => {
  test("bootstrap --remote-control --no-auto-update: app-server on TCP, the loop only keeps", async () => {
    const session = newSession({ settings: { myKey: "kept" } });
    const result = await session.run(["bootstrap", "--remote-control", "--no-auto-update"]);
    expect(result.code).toBe(0);
    const url = remoteControlUrlOf(session, result.json);
    expect(result.json).toMatchObject({
      status: "bootstrapped",
      backend: "pid",
      remoteControlEnabled: true,
      autoUpdateEnabled: false,
      managedVersion: "0.1.0",
      appServerVersion: "0.1.0",
    });
    // Spec "Supervision": the loop is the keeper and runs whenever the app-server is wanted; with auto-update off it only keeps.
    expect(result.json.updater).toMatchObject({ autoUpdate: false });
    expect(keepersOf(session.home)).toEqual([result.json.updater.pid]);
    expect(readJson(session.home.path("daemon/settings.json"))).toEqual({ myKey: "kept", autoUpdate: false, remoteControlEnabled: true });
    expect(statSync(session.home.path("daemon/remote-control.token")).mode & 0o777).toBe(0o600);

    const token = tokenOf(session);
    const info = await initializeOver(url, { Authorization: `Bearer ${token}` });
    expect(info).toMatchObject({ pid: appServerPid(session), remoteControl: { enabled: true, url } });
    const status = await session.run(["status"]);
    expect(status.json.appServer.remoteControl).toEqual({ enabled: true, url });
    expect(status.json.updater.state).toBe("running");
    expect(status.json.updater.lastCheck).toBeUndefined();
    expectTokenNeverShown(session, token);
  });
});

describe("a stranger on the socket", () => {
  test("enable/disable-remote-control and bootstrap fail with NOT_MANAGED and leave settings alone", async () => {
    const session = newSession();
    mkdirSync(session.home.path("daemon"), { mode: 0o700 });
    const socket = session.home.path("daemon/app-server.sock");
    const settingsPath = session.home.path("daemon/settings.json");
    const foreign = Bun.serve({ unix: socket, fetch: () => new Response("x") });
    try {
      const enabled = await session.run(["enable-remote-control"]);
      expect(enabled.code).toBe(1);
      expect(enabled.json.status).toBe("error");
      expect(enabled.json.error.code).toBe("NOT_MANAGED");
      expect(enabled.json.error.message).toContain(socket);
      expect(enabled.stderr).toContain(enabled.json.error.message.split("\n")[0]);
      expect(existsSync(settingsPath)).toBe(false);
      expect(existsSync(session.home.path("daemon/remote-control.token"))).toBe(false);

      const userSettings = '{"myKey": 1}';
      writeFileSync(settingsPath, userSettings, { mode: 0o600 });
      for (const args of [["enable-remote-control"], ["disable-remote-control"], ["bootstrap", "--remote-control", "--no-auto-update"]]) {
        const result = await session.run(args);
        expect(result.code).toBe(1);
        expect(result.json.error.code).toBe("NOT_MANAGED");
        expect(readFileSync(settingsPath, "utf8")).toBe(userSettings);
      }
      expect(existsSync(session.home.path("daemon/remote-control.token"))).toBe(false);
      expect(existsSync(session.home.path("daemon/app-server.pid"))).toBe(false);
      // The stranger still answers: nothing was stopped or removed.
      expect(await (await fetch("http://localhost/", { unix: socket })).text()).toBe("x");
    } finally {
      foreign.stop(true);
    }
    expect(await eventually(() => processesOf(session.home.home).length === 0, 15_000)).toBe(true);
  });
});
