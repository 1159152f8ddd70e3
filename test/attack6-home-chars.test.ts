/**
 * A BERTH_HOME (or HOME: the default is ~/.berth) holding a space, a quote, '#', '?', '%' or a non-ASCII letter
 * (/home/josé, /Users/Jörg, a macOS "Application Support" folder). The socket inside it cannot be put in a
 * ws+unix URL as it is (SPEC "Socket path": the fallback "is used when the path contains `:` (WebSocket-over-Unix
 * URLs cannot carry it)"): Bun percent-encodes the rest and connects to another path, so the app-server was
 * launched, listened, and never answered — start failed with NOT_READY after 10 s, for every command, for ever.
 * Such a path now takes the same fallback folder as ':'.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cronLine, systemdCanRun, systemdUnit } from "../src/daemon/startup.ts";
import { socketPlan, urlSafePath } from "../src/platform/paths.ts";
import { eventually, homesPerTest, isAlive, keepersOf, readJson, startThenReboot, tempDirsPerTest, type TestHome } from "./helpers/berth.ts";

const homes = homesPerTest(afterEach);
const runtimeDir = tempDirsPerTest(afterEach, "berth-a6-run-");
const unitDir = tempDirsPerTest(afterEach, "berth-a6-unit-");
/**
 * A home whose socket takes the fallback folder: in an XDG_RUNTIME_DIR of its own (URL-safe, removed after the
 * test), so no test leaves a berth-<uid>-<hash> folder behind in /tmp.
 */
function newHome(options: { prefix: string }): TestHome {
  const home = homes(options);
  home.env.XDG_RUNTIME_DIR = runtimeDir();
  return home;
}
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

/**
 * What cron does with a crontab command before /bin/sh runs it (crontab(5), cronie's do_command.c): the first
 * unescaped '%' ends the command (the rest becomes its stdin), and `\\%` is a '%'. There is no cron here: this
 * is that documented rule, applied to the line `berth startup` wrote.
 */
function asCronRunsIt(command: string): string {
  let out = "";
  for (let i = 0; i < command.length; i++) {
    const ch = command[i] as string;
    if (ch === "\\" && command[i + 1] === "%") {
      out += "%";
      i++;
    } else if (ch === "%") return out;
    else out += ch;
  }
  return out;
}

describe("startup entries for a home holding '%' or '$' (pure)", () => {
  test("the crontab line escapes '%', which cron would turn into a newline", () => {
    const line = cronLine("/h/50%off", "/h/50%off/b");
    expect(line).toContain("BERTH_HOME='/h/50\\%off' '/h/50\\%off/b' keep");
    expect(asCronRunsIt(line.replace(/^@reboot /, ""))).toContain("BERTH_HOME='/h/50%off' '/h/50%off/b' keep");
  });
  test("the systemd unit doubles '%' (specifiers) everywhere and no '$' (the program's path is not expanded); a newline stays inside its quotes", () => {
    const unit = systemdUnit("/h/5%$x\ny", "/h/5%$x\ny/b");
    expect(unit).toContain('Environment="BERTH_HOME=/h/5%%$x\\ny"');
    expect(unit).toContain('ExecStart="/h/5%%$x\\ny/b" keep');
    expect(unit).toContain("Description=berth keeper for /h/5%%$x\\ny\n");
    // Every line is one of the unit's own: nothing of the home starts a line of its own.
    for (const line of unit.split("\n")) expect(line).toMatch(/^(#|\[|[A-Za-z]+=|$)/);
  });
});

const hasSystemdAnalyze = Bun.which("systemd-analyze") !== null;

// systemd's own parser, without a running systemd: `verify` names the program path it resolved when none is there.
test.skipIf(!hasSystemdAnalyze)("systemd reads the unit of a home holding '$', '%' and a space as naming the managed binary itself (systemd-analyze verify)", () => {
  const root = unitDir();
  const home = join(root, "h $x%y");
  const binary = join(home, "packages", "standalone", "current", "berth");
  mkdirSync(join(home, "packages", "standalone", "current"), { recursive: true });
  writeFileSync(binary, "#!/bin/sh\n");
  chmodSync(binary, 0o755);
  const unit = join(root, "berth-test.service");
  writeFileSync(unit, systemdUnit(home, binary));
  const verify = Bun.spawnSync(["systemd-analyze", "verify", unit], { stdout: "pipe", stderr: "pipe" });
  expect(`${verify.stdout}${verify.stderr}`).not.toContain("is not executable");
  expect(`${verify.stdout}${verify.stderr}`).not.toContain("special characters");
});

// The same characters as systemd's parser refuses: a home holding one gets a crontab line instead of a unit.
test.skipIf(!hasSystemdAnalyze)("systemdCanRun agrees with systemd-analyze verify on which program paths systemd runs", () => {
  const root = unitDir();
  for (const ch of ["'", '"', "\\", "\t", "\u0001", "$", "%", " ", "é", "#", ";", "`", "!", "&", "*", "?", "[", "~"]) {
    const dir = join(root, `h${ch}x`);
    mkdirSync(dir);
    const binary = join(dir, "berth");
    writeFileSync(binary, "#!/bin/sh\n");
    chmodSync(binary, 0o755);
    const unit = join(root, "berth-test.service");
    writeFileSync(unit, systemdUnit(dir, binary));
    const verify = Bun.spawnSync(["systemd-analyze", "verify", unit], { stdout: "pipe", stderr: "pipe" });
    expect({ ch, runs: systemdCanRun(binary) }).toEqual({ ch, runs: verify.exitCode === 0 });
  }
});

/** A fake systemctl whose user session "works" (every call succeeds), in `bin`. */
function fakeSystemctl(bin: string): void {
  writeFileSync(join(bin, "systemctl"), "#!/bin/sh\nexit 0\n");
  chmodSync(join(bin, "systemctl"), 0o755);
}

describe("startup with a systemd user session", () => {
  test("a home holding a quote, which systemd refuses in a program path, gets the crontab line instead of a unit", async () => {
    const home = newHome({ prefix: "berth-it's-" });
    const { bin, table } = fakeCrontab(home);
    fakeSystemctl(bin);
    const result = await home.run(["startup"], { env: { PATH: `${bin}:${process.env.PATH}` } });
    expect(result.json).toMatchObject({ status: "enabled", mechanism: "crontab" });
    expect(readFileSync(table, "utf8")).toContain(result.json.line);
    expect(existsSync(join(home.env.HOME as string, ".config", "systemd", "user"))).toBe(false);
  });

  test("a unit an earlier berth wrote with `$$` for a home holding '$' is written again, not reported as already enabled", async () => {
    const home = newHome({ prefix: "berth-5$-" });
    const { bin } = fakeCrontab(home);
    fakeSystemctl(bin);
    const env = { PATH: `${bin}:${process.env.PATH}` };
    const first = await home.run(["startup"], { env });
    expect(first.json).toMatchObject({ status: "enabled", mechanism: "systemd" });
    const file: string = first.json.file;
    const good = readFileSync(file, "utf8");
    // As the last release wrote it: every '$' of ExecStart doubled, a program path that does not exist.
    writeFileSync(file, good.replace(/^ExecStart=.*$/m, (line) => line.replace(/\$/g, "$$$$")));
    expect(await home.run(["startup"], { env })).toMatchObject({ json: { status: "enabled", mechanism: "systemd", file } });
    expect(readFileSync(file, "utf8")).toBe(good);
    expect((await home.run(["startup"], { env })).json.status).toBe("alreadyEnabled");
  });

  test("a home holding '$' and '%' gets the unit", async () => {
    const home = newHome({ prefix: "berth-5%$-" });
    const { bin } = fakeCrontab(home);
    fakeSystemctl(bin);
    const result = await home.run(["startup"], { env: { PATH: `${bin}:${process.env.PATH}` } });
    expect(result.json).toMatchObject({ status: "enabled", mechanism: "systemd" });
    expect(readFileSync(result.json.file, "utf8")).toContain(`ExecStart=${JSON.stringify(home.path("packages", "standalone", "current", "berth")).replace(/%/g, "%%")} keep`);
  });
});

/** A fake crontab (no cron here): `crontab -` saves the table, `crontab -l` prints it. Returns its folder and table. */
function fakeCrontab(home: TestHome): { bin: string; table: string } {
  const bin = join(home.env.HOME as string, "fakebin");
  mkdirSync(bin);
  const table = join(bin, "table");
  const quoted = `'${table.replace(/'/g, "'\\''")}'`;
  writeFileSync(join(bin, "crontab"), `#!/bin/sh\nif [ "$1" = "-l" ]; then cat ${quoted} 2>/dev/null || exit 1; exit 0; fi\ncat > ${quoted}\n`);
  chmodSync(join(bin, "crontab"), 0o755);
  return { bin, table };
}

test("a home holding a newline, which no crontab line can carry: startup says so, and the table is untouched", async () => {
  const home = newHome({ prefix: "berth-new\nline-" });
  const { bin, table } = fakeCrontab(home);
  writeFileSync(table, "0 * * * * mine\n");
  const result = await home.run(["startup"], { env: { PATH: `${bin}:${process.env.PATH}` } });
  expect(result.json.error).toMatchObject({ code: "INSTALL_FAILED", message: expect.stringContaining("newline") });
  expect(readFileSync(table, "utf8")).toBe("0 * * * * mine\n");
});

test(
  "after a reboot through the @reboot line of a home holding '%', the keeper and the app-server of that home come back",
  async () => {
    const home = newHome({ prefix: "berth-50%off-" });
    const { bin, table } = fakeCrontab(home);
    const enabled = await home.run(["startup"], { env: { PATH: `${bin}:${process.env.PATH}` } });
    expect(enabled.json).toMatchObject({ status: "enabled", mechanism: "crontab" });
    expect(readFileSync(table, "utf8")).toContain(enabled.json.line);

    await startThenReboot(home, WAIT_MS);

    const command = asCronRunsIt((enabled.json.line as string).replace(/^@reboot /, ""));
    // XDG_RUNTIME_DIR as the test's commands have it: the socket's fallback folder depends on it.
    const cronEnv = { PATH: "/usr/bin:/bin", HOME: home.env.HOME as string, SHELL: "/bin/sh", XDG_RUNTIME_DIR: home.env.XDG_RUNTIME_DIR as string };
    expect(Bun.spawnSync({ cmd: ["/bin/sh", "-c", command], env: cronEnv }).exitCode).toBe(0);
    expect(await eventually(async () => (await home.run(["version"])).json.status === "running", WAIT_MS)).toBe(true);
    expect(keepersOf(home).length).toBe(1);
    await home.run(["down"]);
  },
  TEST_TIMEOUT_MS,
);
