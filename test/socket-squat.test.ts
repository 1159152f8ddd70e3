/**
 * The socket's fallback folder has a predictable name (`berth-<uid>-<hash>`
 * in $XDG_RUNTIME_DIR or /tmp): another local user can create it first, as a
 * folder of theirs or a symlink, and listen in it as our app-server. berth
 * must neither use it nor give up for good: `start` makes a private folder
 * with an unpredictable name next to it and records it in daemon/socket-dir,
 * and every client (status, version, connect, stop, doctor, the keeper,
 * uninstall) finds the same socket. The squatter here is a real second user
 * (nobody, through setpriv) in a world-writable sticky folder like /tmp.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { folderState, recordedFolder } from "../src/daemon/socket-dir.ts";
import { socketPlan } from "../src/platform/paths.ts";
import { BUN, MAIN, ROOT, eventually, homesPerTest, type TestHome } from "./helpers/berth.ts";
import { spawnConnect } from "./helpers/connect.ts";
import { acceptsWebSocket } from "./helpers/session.ts";

const SLOW_TEST_MS = 120_000;
const OTHER_UID = 65534;
const isRoot = process.getuid?.() === 0;
const hasSetpriv = spawnSync("setpriv", ["--version"]).status === 0;
const uid = process.getuid?.() ?? 0;

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const clean of cleanups.splice(0).reverse()) clean();
});
const newHome = homesPerTest(afterEach);

/** Runs a command as the other user (nobody): a real second user's process. */
function asOther(cmd: string[]): { status: number | null; stderr: string } {
  const result = spawnSync("setpriv", [`--reuid=${OTHER_UID}`, `--regid=${OTHER_UID}`, "--clear-groups", ...cmd], { encoding: "utf8" });
  return { status: result.status, stderr: result.stderr };
}

/**
 * A home whose path holds ':' (so its socket takes the fallback folder), and an XDG_RUNTIME_DIR that is
 * world-writable and sticky, as /tmp is, so the test leaves nothing in /tmp itself.
 */
function squattableHome(): { home: TestHome; runtime: string; predictable: string } {
  const home = newHome({ prefix: "berth:squat-" });
  const runtime = mkdtempSync(join(tmpdir(), "berth-squat-run-"));
  chmodSync(runtime, 0o1777);
  cleanups.push(() => rmSync(runtime, { recursive: true, force: true }));
  home.env.XDG_RUNTIME_DIR = runtime;
  const plan = socketPlan({ home: home.home, platform: process.platform, uid, runtimeDir: runtime });
  expect(plan.fallbackDir).toBe(join(runtime, basename(plan.fallbackDir as string)));
  return { home, runtime, predictable: plan.fallbackDir as string };
}

/** An impostor listening at `socket`, answering as this home's app-server with pid 12345; killed after the test. */
async function impostorAt(home: TestHome, socket: string, asUser: boolean): Promise<void> {
  const cmd = [BUN, join(ROOT, "test", "fixtures", "fake-server.ts"), socket];
  const fake = Bun.spawn({
    cmd: asUser ? ["setpriv", `--reuid=${OTHER_UID}`, `--regid=${OTHER_UID}`, "--clear-groups", ...cmd] : cmd,
    env: { ...home.env, FAKE_CLAIM_PID: "12345" },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
  });
  cleanups.push(() => fake.kill("SIGKILL"));
  expect(await eventually(() => acceptsWebSocket(socket), 20_000)).toBe(true);
}

describe("which folder a socket-dir record may name (pure)", () => {
  const plan = socketPlan({ home: "/srv/a:b", platform: "linux", uid: 7, runtimeDir: "/run/user/7" });
  const dir = plan.fallbackDir as string;
  const cases: { name: string; recorded: string | undefined; ok: boolean }[] = [
    { name: "the plan's folder", recorded: `${dir}\n`, ok: true },
    { name: "the plan's folder with mkdtemp's suffix", recorded: `${dir}-aZ09xy`, ok: true },
    { name: "the same name in /tmp (another XDG_RUNTIME_DIR)", recorded: `/tmp/${basename(dir)}-aZ09xy`, ok: true },
    { name: "another home's folder", recorded: "/run/user/7/berth-7-00000000", ok: false },
    { name: "another user's folder", recorded: `/tmp/berth-8-${basename(dir).split("-")[2]}`, ok: false },
    { name: "a suffix too long", recorded: `${dir}-aZ09xyz`, ok: false },
    { name: "a relative path", recorded: basename(dir), ok: false },
    { name: "a folder whose name a URL cannot carry", recorded: `/run/a b/${basename(dir)}`, ok: false },
    { name: "too long for a socket", recorded: `/${"x".repeat(90)}/${basename(dir)}`, ok: false },
    { name: "nothing recorded", recorded: undefined, ok: false },
  ];
  for (const { name, recorded, ok } of cases) {
    test(name, () => expect(recordedFolder(recorded, plan, "linux")).toBe(ok ? (recorded as string).trim() : undefined));
  }
});

test("an XDG_RUNTIME_DIR too long for the socket (also with mkdtemp's suffix) gives way to /tmp (pure)", () => {
  const home = "/srv/a:b";
  // 107 bytes on Linux: "<runtime>/berth-7-<8 hex>-XXXXXX/app-server.sock" is the runtime folder plus 40.
  const fits = `/${"r".repeat(107 - 40 - 1)}`;
  const tooLong = `${fits}r`;
  expect(socketPlan({ home, platform: "linux", uid: 7, runtimeDir: fits }).fallbackDir?.startsWith(`${fits}/berth-7-`)).toBe(true);
  expect(socketPlan({ home, platform: "linux", uid: 7, runtimeDir: tooLong }).fallbackDir?.startsWith("/tmp/berth-7-")).toBe(true);
});

describe("what a fallback folder is to us, by lstat (pure)", () => {
  const stat = (kind: "dir" | "link" | "file", owner: number, mode: number) => ({
    isSymbolicLink: () => kind === "link",
    isDirectory: () => kind === "dir",
    uid: owner,
    mode,
  });
  const cases = [
    { name: "missing", stat: undefined, state: "missing" },
    { name: "ours, 0700", stat: stat("dir", 7, 0o40700), state: "ours" },
    { name: "ours, 0755: a loose mode (ours to fix)", stat: stat("dir", 7, 0o40755), state: { mode: 0o755 } },
    { name: "another user's", stat: stat("dir", 8, 0o40700), state: { taken: "is owned by uid 8, not by you (uid 7)" } },
    { name: "a symlink (even our own)", stat: stat("link", 7, 0o120777), state: { taken: "is a symbolic link" } },
    { name: "a file", stat: stat("file", 7, 0o100600), state: { taken: "is not a directory" } },
  ];
  for (const c of cases) test(c.name, () => expect(folderState(c.stat, 7)).toEqual(c.state as ReturnType<typeof folderState>));
});

describe.skipIf(!isRoot || !hasSetpriv)(`a fallback folder another user created first (needs root and setpriv to act as uid ${OTHER_UID})`, () => {
  test(
    "start uses a private folder of its own; status, version, doctor, stop, the keeper and a client without XDG_RUNTIME_DIR find it; uninstall leaves the squatter's folder",
    async () => {
      const { home, runtime, predictable } = squattableHome();
      // The other user takes the name first and listens in it as if it were our app-server.
      expect(asOther(["mkdir", "-m", "0755", predictable])).toEqual({ status: 0, stderr: "" });
      expect(statSync(predictable).uid).toBe(OTHER_UID);
      await impostorAt(home, join(predictable, "app-server.sock"), true);

      // Before any start, no client asks the squatter anything.
      const before = await home.run(["version"]);
      expect(before.json.error.code).toBe("UNSAFE_STATE");
      expect(before.json.error.message).toContain(`${predictable} is owned by uid ${OTHER_UID}`);
      expect((await home.run(["status"])).json.appServer.answering).toBe(false);

      const started = await home.run(["start"]);
      expect(started.json.status).toBe("started");
      const socket: string = started.json.socketPath;
      const own = dirname(socket);
      expect(own).toMatch(new RegExp(`^${predictable}-[A-Za-z0-9]{6}$`));
      expect(lstatSync(own).isDirectory()).toBe(true);
      expect(lstatSync(own).uid).toBe(uid);
      expect(lstatSync(own).mode & 0o777).toBe(0o700);
      expect(started.stderr).toContain(`berth uses ${own} instead`);
      expect(readFileSync(home.path("daemon", "socket-dir"), "utf8").trim()).toBe(own);
      expect(statSync(home.path("daemon", "socket-dir")).mode & 0o777).toBe(0o600);

      const version = await home.run(["version"]);
      expect(version.json).toMatchObject({ status: "running", pid: started.json.pid, socketPath: socket });
      const status = await home.run(["status"]);
      expect(status.json.socketPath).toBe(socket);
      expect(status.json.appServer.answering).toBe(true);
      // A client whose session has no XDG_RUNTIME_DIR (an @reboot cron job) finds the same folder.
      const { XDG_RUNTIME_DIR: _runtime, ...noRuntime } = home.env;
      const elsewhere = await home.exec([BUN, join(ROOT, "src", "main.ts"), "version"], { env: { ...noRuntime, XDG_RUNTIME_DIR: "" } });
      expect(elsewhere.json).toMatchObject({ status: "running", pid: started.json.pid, socketPath: socket });
      const bridge = spawnConnect([BUN, MAIN, "connect"], home.env);
      cleanups.push(() => bridge.kill());
      expect(await bridge.waitConnected()).toMatchObject({ socketPath: socket, pid: started.json.pid });
      bridge.kill();
      const doctor = await home.run(["doctor"]);
      expect(doctor.json.findings.find((finding: { check: string }) => finding.check === "socket")).toMatchObject({ ok: true, message: expect.stringContaining(socket) });

      // The keeper (its steps are fresh processes) restarts a crash into the same folder.
      process.kill(started.json.pid, "SIGKILL");
      expect(
        await eventually(async () => {
          const again = (await home.run(["version"])).json;
          return again.status === "running" && again.pid !== started.json.pid && again.socketPath === socket;
        }, 30_000),
      ).toBe(true);

      const stopped = await home.run(["stop"]);
      expect(stopped.json).toMatchObject({ status: "stopped", socketPath: socket });

      const uninstalled = await home.run(["uninstall"]);
      expect(uninstalled.json.status).toBe("uninstalled");
      expect(uninstalled.json.removed).toContain(own);
      expect(uninstalled.json.kept.join("\n")).toContain(`${predictable} (it is owned by uid ${OTHER_UID}`);
      expect(existsSync(own)).toBe(false);
      expect(statSync(predictable).uid).toBe(OTHER_UID);
      expect(statSync(runtime).isDirectory()).toBe(true);
    },
    SLOW_TEST_MS,
  );

  test(
    "a symlink planted as the folder (to a 0700 folder of ours elsewhere): never followed, never removed through; start and uninstall carry on",
    async () => {
      const { home, predictable } = squattableHome();
      const precious = mkdtempSync(join(tmpdir(), "berth-squat-precious-"));
      cleanups.push(() => rmSync(precious, { recursive: true, force: true }));
      mkdirSync(join(precious, "keep"));
      // The other user's link, in the sticky folder: we may not remove it.
      expect(asOther(["ln", "-s", precious, predictable]).status).toBe(0);
      const started = await home.run(["start"]);
      expect(started.json.status).toBe("started");
      expect(dirname(started.json.socketPath)).toMatch(new RegExp(`^${predictable}-[A-Za-z0-9]{6}$`));
      expect(existsSync(join(precious, "app-server.sock"))).toBe(false);
      const uninstalled = await home.run(["uninstall"]);
      expect(uninstalled.json.status).toBe("uninstalled");
      expect(uninstalled.json.kept.join("\n")).toContain(`${predictable} (it is a symbolic link`);
      expect(lstatSync(predictable).isSymbolicLink()).toBe(true);
      expect(existsSync(join(precious, "keep"))).toBe(true);
    },
    SLOW_TEST_MS,
  );

  test(
    "connect on a home whose folder was taken starts the app-server in a folder of its own and connects to it",
    async () => {
      const { home, predictable } = squattableHome();
      expect(asOther(["mkdir", "-m", "0755", predictable]).status).toBe(0);
      await impostorAt(home, join(predictable, "app-server.sock"), true);
      // Without start: refused, and the impostor is not asked (it would have answered as this home's server).
      const refused = await home.run(["connect", "--no-start"]);
      expect(refused.json.error).toMatchObject({ code: "UNSAFE_STATE", message: expect.stringContaining(`${predictable} is owned by uid ${OTHER_UID}`) });
      const bridge = spawnConnect([BUN, MAIN, "connect"], home.env);
      cleanups.push(() => bridge.kill());
      const connected = await bridge.waitConnected();
      expect(dirname(connected.socketPath)).toMatch(new RegExp(`^${predictable}-[A-Za-z0-9]{6}$`));
      expect(connected.pid).not.toBe(12345);
      bridge.kill();
      expect((await home.run(["version"])).json).toMatchObject({ pid: connected.pid, socketPath: connected.socketPath });
      expect((await home.run(["stop"])).json.status).toBe("stopped");
    },
    SLOW_TEST_MS,
  );

  test(
    "two starts at once record one folder: both report the socket the app-server listens on",
    async () => {
      const { home, predictable } = squattableHome();
      expect(asOther(["mkdir", "-m", "0700", predictable]).status).toBe(0);
      const [a, b] = await Promise.all([home.run(["start"]), home.run(["start"])]);
      expect([a.json.status, b.json.status].sort()).toEqual(["alreadyRunning", "started"]);
      expect(a.json.socketPath).toBe(b.json.socketPath);
      expect((await home.run(["version"])).json.socketPath).toBe(a.json.socketPath);
      expect((await home.run(["stop"])).json.status).toBe("stopped");
    },
    SLOW_TEST_MS,
  );
});

test.skipIf(!isRoot)("a recorded folder that is no longer ours (recreated by someone else) is not used; start records a fresh one", async () => {
  const { home, predictable } = squattableHome();
  const started = await home.run(["start"]);
  expect(started.json.socketPath).toBe(join(predictable, "app-server.sock"));
  expect(readFileSync(home.path("daemon", "socket-dir"), "utf8").trim()).toBe(predictable);
  expect((await home.run(["stop"])).json.status).toBe("stopped");
  // As after a reboot cleaned the folder: someone else creates it under the recorded name.
  rmSync(predictable, { recursive: true, force: true });
  mkdirSync(predictable, { mode: 0o700 });
  chownSync(predictable, OTHER_UID, OTHER_UID);
  const status = await home.run(["status"]);
  expect(status.json.appServer.answering).toBe(false);
  const again = await home.run(["start"]);
  expect(again.json.status).toBe("started");
  expect(dirname(again.json.socketPath)).toMatch(new RegExp(`^${predictable}-[A-Za-z0-9]{6}$`));
  expect((await home.run(["stop"])).json.socketPath).toBe(again.json.socketPath);
}, SLOW_TEST_MS);

test("a symlink in place of daemon/socket-dir is not followed: clients ignore it, start replaces it with a record of its own", async () => {
  const { home, predictable } = squattableHome();
  // The link names a file that names a folder of ours which is not the plan's.
  const elsewhere = mkdtempSync(`${predictable}-`);
  const target = join(home.home, "..", "planted-record");
  writeFileSync(target, `${elsewhere}\n`);
  mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
  symlinkSync(target, home.path("daemon", "socket-dir"));
  const started = await home.run(["start"]);
  expect(started.json.status).toBe("started");
  expect(started.json.socketPath).toBe(join(predictable, "app-server.sock"));
  expect(lstatSync(home.path("daemon", "socket-dir")).isFile()).toBe(true);
  expect(readFileSync(target, "utf8")).toBe(`${elsewhere}\n`);
  expect((await home.run(["stop"])).json.socketPath).toBe(started.json.socketPath);
}, SLOW_TEST_MS);

describe.skipIf(!isRoot || !hasSetpriv)(`an updater that chose its socket folder before another user (uid ${OTHER_UID}) took it`, () => {
  test(
    "its rollout asks the recorded folder's app-server, not an impostor in the old one: no restart, no quarantine",
    async () => {
      const { home, predictable } = squattableHome();
      // The loop's context, opened before anything was recorded: the plan's folder, as a loop started long ago has it.
      const { openContext } = await import("../src/daemon/context.ts");
      const stale = openContext({ ...home.env });
      expect(stale.socket.fallbackDir).toBe(predictable);
      // Since then: the other user took the name and listens there as a 9.9.9 app-server of this home; start moved on.
      expect(asOther(["mkdir", "-m", "0755", predictable]).status).toBe(0);
      await impostorAt(home, join(predictable, "app-server.sock"), true);
      const started = await home.run(["start"]);
      expect(started.json.status).toBe("started");

      const { tryRollout } = await import("../src/update/update.ts");
      const rollout = await tryRollout(stale, { version: "0.1.0", previousReleaseDir: null }, "try");
      expect(rollout).toMatchObject({ status: "updated", restarted: false, appServerVersion: "0.1.0" });
      expect((await home.run(["version"])).json).toMatchObject({ status: "running", pid: started.json.pid });
      const state = JSON.parse(readFileSync(home.path("daemon", "updater-state.json"), "utf8"));
      expect(state.quarantined ?? []).toEqual([]);
    },
    SLOW_TEST_MS,
  );
});
