/**
 * A BERTH_HOME (or HOME: the default is ~/.berth) holding a space, a quote, '#', '?', '%' or a non-ASCII letter
 * (/home/josé, /Users/Jörg, a macOS "Application Support" folder). The socket inside it cannot be put in a
 * ws+unix URL as it is (SPEC "Socket path": the fallback "is used when the path contains `:` (WebSocket-over-Unix
 * URLs cannot carry it)"): Bun percent-encodes the rest and connects to another path, so the app-server was
 * launched, listened, and never answered — start failed with NOT_READY after 10 s, for every command, for ever.
 * Such a path now takes the same fallback folder as ':'.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { socketPlan, urlSafePath } from "../src/platform/paths.ts";
import { eventually, homesPerTest, isAlive, readJson } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const TEST_TIMEOUT_MS = 90_000;
const WAIT_MS = 20_000;

describe("which socket paths a ws+unix URL carries as they are (pure)", () => {
  const cases: { path: string; safe: boolean }[] = [
    { path: "/home/ada/.berth/daemon/app-server.sock", safe: true },
    { path: "/srv/b_e-r~t.h/(1)+x=y;z,a@b!$&'*/s.sock", safe: true },
    { path: "/srv/a:b/s.sock", safe: false },
    { path: "/Users/John Smith/.berth/s.sock", safe: false },
    { path: "/home/josé/.berth/s.sock", safe: false },
    { path: '/srv/a"b/s.sock', safe: false },
    { path: "/srv/a#b/s.sock", safe: false },
    { path: "/srv/a?b/s.sock", safe: false },
    { path: "/srv/a%41b/s.sock", safe: false },
    { path: "/srv/a\nb/s.sock", safe: false },
    { path: "/srv/a\\b/s.sock", safe: false },
  ];
  for (const { path, safe } of cases) test(`${JSON.stringify(path)} → ${safe ? "as it is" : "fallback"}`, () => expect(urlSafePath(path)).toBe(safe));

  test("the fallback folder itself is URL-safe: an XDG_RUNTIME_DIR that is not gives way to /tmp", () => {
    const plan = socketPlan({ home: "/home/josé/.berth", platform: "linux", uid: 7, runtimeDir: "/run/user/7 x" });
    expect(plan.fallbackDir?.startsWith("/tmp/berth-7-")).toBe(true);
    expect(socketPlan({ home: "/home/josé/.berth", platform: "linux", uid: 7, runtimeDir: "/run/user/7" }).fallbackDir?.startsWith("/run/user/7/berth-7-")).toBe(true);
  });
});

for (const [name, prefix] of [
  ["a space", "berth test sp-"],
  ["a non-ASCII letter", "berth-josé-"],
  ["a quote, '#' and '?'", `berth-"q#?-`],
] as const) {
  test(
    `a home holding ${name}: start answers at once, connect, version and stop work, and the keeper restarts a crash`,
    async () => {
      const home = newHome({ prefix });
      const started = await home.run(["bootstrap", "--no-auto-update"]);
      expect(started.json).toMatchObject({ status: "bootstrapped" });
      const socket = started.json.socketPath as string;
      expect(urlSafePath(socket)).toBe(true);
      expect((await home.run(["version"])).json).toMatchObject({ status: "running", pid: started.json.pid });
      expect((await home.run(["status"])).json.appServer).toMatchObject({ state: "running", answering: true });
      // stdin at EOF at once: the `connected` line, then exit 0.
      const connected = await home.run(["connect", "--no-start"]);
      expect({ code: connected.code, json: connected.json }).toMatchObject({ code: 0, json: { status: "connected", pid: started.json.pid, socketPath: socket } });

      const log = () => readFileSync(home.path("daemon/updater.log"), "utf8");
      expect(await eventually(() => log().includes(`watching app-server pid ${started.json.pid}`), WAIT_MS)).toBe(true);
      process.kill(started.json.pid, "SIGKILL");
      expect(await eventually(() => {
        const pid = readJson(home.path("daemon/app-server.pid")).pid as number;
        return pid !== started.json.pid && isAlive(pid);
      }, WAIT_MS)).toBe(true);
      expect(await eventually(async () => (await home.run(["version"])).json.status === "running", WAIT_MS)).toBe(true);

      const stopped = await home.run(["down"]);
      expect(stopped.json.status).not.toBe("error");
      expect(existsSync(socket)).toBe(false);
    },
    TEST_TIMEOUT_MS,
  );
}
