/**
 * down, startup and uninstall end to end: real processes, a real compiled
 * binary for the full install, fake `crontab`/`systemctl`/`loginctl`
 * programs in PATH that record what berth asked of them.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compile } from "../build.ts";
import { newKey, writeSigned } from "./helpers/signed-release.ts";
import { removePathBlocks } from "../src/daemon/uninstall.ts";
import { cronLine, withoutCronLine } from "../src/daemon/startup.ts";
import { parseWanted } from "../src/daemon/wanted.ts";
import { eventually, homesPerTest, isAlive, keepersOf, processesOf, readJson, serversOf, QUIET_WINDOW_MS } from "./helpers/berth.ts";


const newHome = homesPerTest(afterEach);


/** A folder of fake tools; each records its arguments (and stdin for `crontab -`). */
function fakeTools(dir: string, options: { systemd: boolean }): { env: Record<string, string>; calls: () => string[]; crontab: string } {
  mkdirSync(dir, { recursive: true });
  const crontab = join(dir, "crontab.txt");
  const calls = join(dir, "calls.log");
  const write = (name: string, body: string) => {
    writeFileSync(join(dir, name), `#!/bin/sh\necho "${name} $*" >> '${calls}'\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  };
  write("crontab", `if [ "$1" = "-l" ]; then [ -f '${crontab}' ] || { echo "no crontab for user" >&2; exit 1; }; cat '${crontab}'; exit 0; fi\nif [ "$1" = "-" ]; then cat > '${crontab}'; exit 0; fi\nexit 2`);
  write("systemctl", options.systemd ? "exit 0" : `echo "Failed to connect to bus" >&2; exit 1`);
  write("loginctl", `echo no`);
  return {
    env: { PATH: `${dir}:${process.env.PATH}` },
    calls: () => (existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n") : []),
    crontab,
  };
}

describe("pure parts", () => {
  test("wanted state: anything unreadable means stopped", () => {
    const epoch = new Date(0).toISOString();
    expect(parseWanted(undefined)).toEqual({ appServer: "stopped", since: epoch });
    expect(parseWanted("{")).toEqual({ appServer: "stopped", since: epoch });
    expect(parseWanted('{"appServer":"maybe","since":"x"}')).toEqual({ appServer: "stopped", since: epoch });
    expect(parseWanted('{"appServer":"running","since":"t"}')).toEqual({ appServer: "running", since: "t" });
    expect(parseWanted('{"appServer":"stopped","since":"t","down":true}')).toEqual({ appServer: "stopped", since: "t", down: true });
  });
  test("PATH blocks removed, every other line kept; unpaired markers change nothing", () => {
    const block = "# >>> berth >>>\nexport PATH=x\n# <<< berth <<<";
    expect(removePathBlocks(`mine 1\n${block}\nmine 2\n`)).toEqual({ text: "mine 1\nmine 2\n", blocks: 1 });
    expect(removePathBlocks(`${block}\nmine\n${block}\n`)).toEqual({ text: "mine\n", blocks: 2 });
    expect(removePathBlocks("no block\n")).toEqual({ text: "no block\n", blocks: 0 });
    expect(removePathBlocks("# >>> berth >>>\nmine\n")).toEqual({ malformed: true });
  });
  test("crontab line: marked per BERTH_HOME; removal keeps other lines", () => {
    const line = cronLine("/h/o'me", "/b/berth");
    expect(line).toBe(`@reboot BERTH_HOME='/h/o'\\''me' '/b/berth' keep >/dev/null 2>&1 # berth-startup ${line.split(" ").pop()}`);
    expect(withoutCronLine(`0 * * * * mine\n${line}\n`, "/h/o'me")).toBe("0 * * * * mine\n");
    expect(withoutCronLine(`${cronLine("/other", "/b")}\n`, "/h/o'me")).toBe(`${cronLine("/other", "/b")}\n`);
  });
});

describe("down", () => {
  test("down stops the app-server and the keeper; nothing comes back; start brings it back", async () => {
    const home = newHome();
    const boot = await home.run(["bootstrap", "--no-auto-update"]);
    const result = await home.run(["down"]);
    expect(result.json).toMatchObject({ status: "down", appServer: "stopped", keeper: "stopped" });
    expect(isAlive(boot.json.pid)).toBe(false);
    expect(isAlive(boot.json.updater.pid)).toBe(false);
    await Bun.sleep(QUIET_WINDOW_MS);
    expect(processesOf(home.home)).toEqual([]);
    const status = await home.run(["status"]);
    expect(status.json.appServer.state).toBe("stopped");
    expect(status.json.updater.state).toBe("stopped");
    expect((await home.run(["down"])).json).toMatchObject({ status: "down", appServer: "notRunning", keeper: "notRunning" });
    // After down, the startup entry (`keep`) brings nothing back either.
    expect((await home.run(["keep"])).json.status).toBe("down");
    expect(processesOf(home.home)).toEqual([]);
    expect((await home.run(["start"])).json.status).toBe("started");
    expect(await eventually(async () => (await home.run(["status"])).json.updater.state === "running")).toBe(true);
  }, 60_000);
});

describe("the keeper after a bare start (no bootstrap)", () => {
  test("start launches the keeper, which restarts a crashed server; stop leaves the keeper; down ends both; restart brings it back", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    // Its record is published before `start` returns.
    const keeper = readJson(home.path("daemon", "updater.pid")).pid as number;
    expect(keepersOf(home)).toEqual([keeper]);

    process.kill(started.json.pid, "SIGKILL");
    const restarted = async () => {
      const status = (await home.run(["status"])).json;
      return status.appServer.state === "running" && status.appServer.pid !== started.json.pid && status.appServer.answering === true;
    };
    expect(await eventually(restarted, 20_000, 200)).toBe(true);

    const stopped = await home.run(["stop"]);
    expect(stopped.json.status).toBe("stopped");
    expect(serversOf(home)).toEqual([]);
    expect(keepersOf(home)).toEqual([keeper]);
    expect((await home.run(["status"])).json.updater.state).toBe("running");

    expect((await home.run(["down"])).json).toMatchObject({ status: "down", appServer: "notRunning", keeper: "stopped" });
    expect(await eventually(() => processesOf(home.home).length === 0, 20_000)).toBe(true);

    expect((await home.run(["restart"])).json.status).toBe("restarted");
    expect(keepersOf(home)).toEqual([readJson(home.path("daemon", "updater.pid")).pid]);
  }, 90_000);
});

describe("startup", () => {
  test("crontab path: a marked @reboot line, idempotent; --disable restores the table exactly; the line brings the keeper back", async () => {
    const home = newHome();
    const tools = fakeTools(join(home.env.HOME as string, "fakebin"), { systemd: false });
    writeFileSync(tools.crontab, "0 3 * * * /usr/bin/mine --nightly\n");
    const env = tools.env;
    const enabled = await home.run(["startup"], { env });
    expect(enabled.json).toMatchObject({ status: "enabled", mechanism: "crontab" });
    const table = readFileSync(tools.crontab, "utf8");
    expect(table).toBe(`0 3 * * * /usr/bin/mine --nightly\n${enabled.json.line}\n`);
    expect(enabled.json.line).toStartWith("@reboot ");
    expect((await home.run(["startup"], { env })).json).toMatchObject({ status: "alreadyEnabled", mechanism: "crontab" });
    expect(readFileSync(tools.crontab, "utf8")).toBe(table);

    // A "reboot": wanted running, nothing runs; the @reboot command brings keeper and app-server back.
    const boot = await home.run(["bootstrap", "--no-auto-update"]);
    process.kill(-boot.json.updater.pid, "SIGKILL");
    process.kill(boot.json.pid, "SIGKILL");
    expect(await eventually(() => serversOf(home).length === 0 && !isAlive(boot.json.updater.pid))).toBe(true);
    const command = (enabled.json.line as string).replace(/^@reboot /, "");
    const rebooted = Bun.spawnSync({ cmd: ["sh", "-c", command], env: { PATH: process.env.PATH as string, HOME: home.env.HOME as string } });
    expect(rebooted.exitCode).toBe(0);
    expect(await eventually(async () => (await home.run(["status"])).json.appServer.state === "running", 20_000)).toBe(true);

    const disabled = await home.run(["startup", "--disable"], { env });
    expect(disabled.json).toMatchObject({ status: "disabled", mechanism: "crontab" });
    expect(readFileSync(tools.crontab, "utf8")).toBe("0 3 * * * /usr/bin/mine --nightly\n");
    expect((await home.run(["startup", "--disable"], { env })).json.status).toBe("alreadyDisabled");
  }, 60_000);

  test("systemd path (fake systemctl that works): unit written and enabled, linger reported; --disable removes it", async () => {
    const home = newHome();
    const tools = fakeTools(join(home.env.HOME as string, "fakebin"), { systemd: true });
    const config = join(home.env.HOME as string, "config");
    const env = { ...tools.env, XDG_CONFIG_HOME: config, USER: "someone" };
    const enabled = await home.run(["startup"], { env });
    expect(enabled.json).toMatchObject({ status: "enabled", mechanism: "systemd", linger: false, lingerCommand: "loginctl enable-linger someone" });
    const unit = readFileSync(enabled.json.file, "utf8");
    expect(enabled.json.file).toStartWith(join(config, "systemd", "user", "berth-"));
    expect(unit).toContain(`ExecStart="${home.path("packages/standalone/current/berth")}" keep`);
    expect(unit).toContain(`Environment="BERTH_HOME=${home.home}"`);
    const unitName = enabled.json.file.split("/").pop();
    expect(tools.calls()).toContain(`systemctl --user enable ${unitName}`);
    expect((await home.run(["startup"], { env })).json.status).toBe("alreadyEnabled");
    const disabled = await home.run(["startup", "--disable"], { env });
    expect(disabled.json).toMatchObject({ status: "disabled", mechanism: "systemd", removed: [enabled.json.file] });
    expect(existsSync(enabled.json.file)).toBe(false);
    expect(tools.calls()).toContain(`systemctl --user disable ${unitName}`);
  }, 60_000);
});

let binDir: string;
let binary: string;
/** The release key the compiled binary trusts. */
const KEY = newKey();
beforeAll(async () => {
  binDir = mkdtempSync(join(tmpdir(), "berth-supervision-bin-"));
  binary = join(binDir, "berth");
  await compile({ version: "1.0.0", outfile: binary, trustedKeys: [KEY.spki] });
}, 120_000);
afterAll(() => rmSync(binDir, { recursive: true, force: true }));

describe("uninstall", () => {
  test("after install --bootstrap: berth's files, processes and PATH block gone, the user's lines intact; twice still succeeds", async () => {
    const home = newHome({ install: false });
    const userHome = home.env.HOME as string;
    const tools = fakeTools(join(userHome, "fakebin"), { systemd: false });
    const env = { ...tools.env, SHELL: "/bin/bash" };
    writeFileSync(join(userHome, ".bashrc"), "# my line before\nalias ll='ls -l'\n");
    writeFileSync(join(userHome, ".profile"), "# my profile\n");
    const installed = await home.exec([binary, "install", "--bootstrap"], { env });
    expect(installed.json.status).toBe("installed");
    const link = join(home.env.BERTH_INSTALL_DIR as string, "berth");
    expect(existsSync(link)).toBe(true);
    // A user line after berth's block, too.
    writeFileSync(join(userHome, ".bashrc"), `${readFileSync(join(userHome, ".bashrc"), "utf8")}# my line after\n`);
    expect(readFileSync(join(userHome, ".bashrc"), "utf8")).toContain("# >>> berth >>>");
    expect((await home.exec([link, "startup"], { env })).json.status).toBe("enabled");

    const result = await home.exec([link, "uninstall"], { env });
    expect(result.json).toMatchObject({ status: "uninstalled", stopped: { appServer: "stopped", keeper: "stopped" } });
    expect(result.json.removed).toContain(link);
    expect(result.json.removed).toContain(home.home);
    expect(result.json.removed).toContain(`${join(userHome, ".bashrc")} (PATH block)`);
    expect(existsSync(home.home)).toBe(false);
    expect(existsSync(link)).toBe(false);
    expect(readFileSync(tools.crontab, "utf8")).toBe("");
    const bashrc = readFileSync(join(userHome, ".bashrc"), "utf8");
    expect(bashrc).not.toContain("berth");
    for (const line of ["# my line before", "alias ll='ls -l'", "# my line after"]) expect(bashrc).toContain(line);
    expect(readFileSync(join(userHome, ".profile"), "utf8")).toContain("# my profile");
    await Bun.sleep(QUIET_WINDOW_MS);
    expect(processesOf(home.home)).toEqual([]);

    const again = await home.exec([binary, "uninstall"], { env });
    expect(again.json).toMatchObject({ status: "uninstalled", removed: [] });
    expect(existsSync(home.home)).toBe(false);
  }, 120_000);

  test("a BERTH_HOME holding files berth did not create keeps them (and itself)", async () => {
    const home = newHome();
    expect((await home.run(["bootstrap", "--no-auto-update"])).json.status).toBe("bootstrapped");
    writeFileSync(home.path("notes.txt"), "mine\n");
    const result = await home.run(["uninstall"]);
    expect(result.json.status).toBe("uninstalled");
    expect(readFileSync(home.path("notes.txt"), "utf8")).toBe("mine\n");
    expect(existsSync(home.path("packages"))).toBe(false);
    expect(existsSync(home.path("daemon"))).toBe(false);
    expect(result.json.kept.join("\n")).toContain("notes.txt");
    expect(processesOf(home.home)).toEqual([]);
  }, 60_000);

  test("--keep-data keeps settings and token only", async () => {
    const home = newHome({ install: false });
    const env = { SHELL: "/bin/bash" };
    const installed = await home.exec([binary, "install", "--bootstrap", "--remote-control", "--no-modify-path"], { env });
    expect(installed.json?.status, installed.stdout + installed.stderr).toBe("installed");
    const result = await home.exec([binary, "uninstall", "--keep-data"], { env });
    expect(result.json.status).toBe("uninstalled");
    expect([...result.json.kept].sort()).toEqual([home.path("daemon/remote-control.token"), home.path("daemon/settings.json")].sort());
    expect(readJson(home.path("daemon/settings.json")).remoteControlEnabled).toBe(true);
    expect(existsSync(home.path("packages"))).toBe(false);
    expect(existsSync(home.path("daemon/app-server.log"))).toBe(false);
    expect(processesOf(home.home)).toEqual([]);
  }, 120_000);
});

describe("doctor", () => {
  let host: ReturnType<typeof Bun.serve>;
  beforeAll(() => {
    const root = join(binDir, "host");
    mkdirSync(root);
    writeSigned(join(root, "latest.json"), '{"version":"1.0.0"}\n', KEY);
    host = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (request) => {
      const path = new URL(request.url).pathname;
      return ["/latest.json", "/latest.json.sig"].includes(path) ? new Response(Bun.file(join(root, path))) : new Response("no", { status: 404 });
    } });
  });
  afterAll(() => host.stop(true));

  async function healthyInstall() {
    const home = newHome({ install: false });
    const tools = fakeTools(join(home.env.HOME as string, "fakebin"), { systemd: false });
    const env = { ...tools.env, SHELL: "/bin/bash", BERTH_RELEASE_BASE_URL: `http://127.0.0.1:${host.port}` };
    expect((await home.exec([binary, "install", "--bootstrap"], { env })).json.status).toBe("installed");
    const link = join(home.env.BERTH_INSTALL_DIR as string, "berth");
    expect((await home.exec([link, "startup"], { env })).json.status).toBe("enabled");
    return { home, env, link };
  }

  test("a healthy install: every finding ok", async () => {
    const { home, env, link } = await healthyInstall();
    // The keeper records its version as it starts.
    expect(await eventually(async () => Boolean((await home.exec([link, "status"], { env })).json.updater?.version))).toBe(true);
    const result = await home.exec([link, "doctor"], { env });
    expect(result.code).toBe(0);
    const failed = result.json.findings.filter((f: { ok: boolean }) => !f.ok);
    expect(failed).toEqual([]);
    expect(result.json.status).toBe("ok");
    const checks = new Set(result.json.findings.map((f: { check: string }) => f.check));
    for (const check of ["path", "commandLink", "managedBinary", "folders", "socket", "settings", "releaseHost", "signatureKey", "keeper", "lastUpdateCheck", "startup", "disk"]) expect(checks).toContain(check);
  }, 120_000);

  test("a broken link, corrupt settings and a stopped keeper: each found, each with a fix; exit 0", async () => {
    const { home, env, link } = await healthyInstall();
    const updater = readJson(home.path("daemon/updater.pid")).pid as number;
    process.kill(-updater, "SIGKILL");
    expect(await eventually(() => !isAlive(updater))).toBe(true);
    rmSync(link);
    const { symlinkSync } = await import("node:fs");
    symlinkSync(join(home.home, "nowhere", "berth"), link);
    writeFileSync(home.path("daemon/settings.json"), "{ not json");
    const result = await home.exec([binary, "doctor"], { env });
    expect(result.code).toBe(0);
    expect(result.json.status).toBe("problems");
    const byCheck = (check: string) => result.json.findings.find((f: { check: string }) => f.check === check);
    for (const check of ["commandLink", "settings", "keeper"]) {
      expect(byCheck(check)).toMatchObject({ ok: false });
      expect(typeof byCheck(check).fix).toBe("string");
    }
    expect(byCheck("settings").message).toContain("settings.json");
    expect(byCheck("keeper").fix).toBe("berth bootstrap");
    expect(byCheck("commandLink").fix).toContain("install");
  }, 120_000);
});

describe("help that teaches", () => {
  test("every listed command's --help has an example, the environment it reads and its JSON output", async () => {
    const { commands } = await import("../src/commands/index.ts");
    for (const [name, load] of Object.entries(commands)) {
      const command = await load();
      const meta = (typeof command.meta === "function" ? await command.meta() : await command.meta) as { description?: string; hidden?: boolean };
      if (meta?.hidden) continue;
      for (const part of ["Example: ", "Environment: ", "Output (one JSON line on stdout): "]) expect(`${name}: ${meta?.description ?? ""}`).toContain(part);
    }
    const home = newHome();
    const help = await home.run(["doctor", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Example: berth doctor");
  });
});
