// SPEC "Supervision": "The updater loop is also the app-server's keeper: it
// runs whenever the app-server is wanted". A settings.json with a typo must
// not end it: the loop re-executes itself from each new release (SPEC
// "Updater"), days after the typo, and read its settings before anything else.
import { afterEach, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cronLine } from "../src/daemon/startup.ts";
import { probeInitialize } from "../src/server/client.ts";
import { eventually, homesPerTest, installRelease, isAlive, loopBinaryOf, readJson, startThenReboot, type TestHome } from "./helpers/berth.ts";
import { RpcClient } from "./helpers/rpc-client.ts";

const newHome = homesPerTest(afterEach);
const TEST_TIMEOUT_MS = 90_000;
const WAIT_MS = 20_000;
/** Update ticks every second (the floor), so the loop runs the new release's step soon after the flip. */
const FAST_TICKS = { BERTH_UPDATE_INITIAL_DELAY_MS: "1000", BERTH_UPDATE_INTERVAL_MS: "1000" };

async function answeringPid(home: TestHome): Promise<number | undefined> {
  const probe = await probeInitialize(home.path("daemon/app-server.sock"), 1_000);
  return probe.kind === "berth" ? probe.info.pid : undefined;
}

const log = (home: TestHome) => readFileSync(home.path("daemon/updater.log"), "utf8");

test.skipIf(process.platform !== "linux")(
  "a keeper re-executed from a new release while settings.json is corrupt keeps running and, once the file is fixed, restarts a crashed app-server",
  async () => {
    const home = newHome();
    const boot = await home.run(["bootstrap", "--no-auto-update"], { env: FAST_TICKS });
    expect(boot.json.status).toBe("bootstrapped");
    const keeper = boot.json.updater.pid as number;
    expect(await eventually(() => log(home).includes(`watching app-server pid ${boot.json.pid}`), WAIT_MS)).toBe(true);

    writeFileSync(home.path("daemon/settings.json"), "{ a typo");
    const newBinary = installRelease(home.home, "0.2.0");
    // The loop (same pid) re-executes `update-loop` from 0.2.0, which reads settings.json first.
    expect(await eventually(() => loopBinaryOf(keeper) === realpathSync(newBinary), WAIT_MS)).toBe(true);
    expect(await eventually(() => /settings\.json is not valid JSON.*keeping the app-server/.test(log(home)), WAIT_MS)).toBe(true);
    expect(isAlive(keeper)).toBe(true);
    expect(readJson(home.path("daemon/updater.pid")).pid).toBe(keeper);
    expect(readFileSync(home.path("daemon/settings.json"), "utf8")).toBe("{ a typo");

    // Fixed: a crash is restarted by the same keeper.
    writeFileSync(home.path("daemon/settings.json"), "{}");
    process.kill(boot.json.pid, "SIGKILL");
    expect(await eventually(async () => {
      const pid = await answeringPid(home);
      return pid !== undefined && pid !== boot.json.pid;
    }, WAIT_MS)).toBe(true);
    expect(isAlive(keeper)).toBe(true);
  },
  TEST_TIMEOUT_MS,
);

test.skipIf(process.platform !== "linux")(
  "after a reboot through the @reboot crontab line, the login shell is the user's $SHELL, not cron's /bin/sh",
  async () => {
    const home = newHome();
    // A fake crontab (this machine's cron may be absent): `crontab -` saves the table, `crontab -l` prints it.
    const bin = join(home.env.HOME as string, "fakebin");
    mkdirSync(bin);
    const table = join(bin, "table");
    writeFileSync(join(bin, "crontab"), `#!/bin/sh\nif [ "$1" = "-l" ]; then cat '${table}' 2>/dev/null || exit 1; exit 0; fi\ncat > '${table}'\n`);
    chmodSync(join(bin, "crontab"), 0o755);
    const enabled = await home.run(["startup"], { env: { PATH: `${bin}:${process.env.PATH}`, SHELL: "/bin/dash" } });
    expect(enabled.json).toMatchObject({ status: "enabled", mechanism: "crontab" });

    // Wanted running, then everything gone, as after a reboot.
    await startThenReboot(home, WAIT_MS);

    // cron runs the command with /bin/sh, SHELL=/bin/sh, and little else.
    const command = (enabled.json.line as string).replace(/^@reboot /, "");
    const cronEnv = { PATH: "/usr/bin:/bin", HOME: home.env.HOME as string, SHELL: "/bin/sh", LOGNAME: "root" };
    expect(Bun.spawnSync({ cmd: ["/bin/sh", "-c", command], env: cronEnv }).exitCode).toBe(0);
    expect(await eventually(async () => (await answeringPid(home)) !== undefined, WAIT_MS)).toBe(true);
    const rpc = await RpcClient.open(home.path("daemon/app-server.sock"));
    try {
      expect((await rpc.call("system/info")).shell).toBe("/bin/dash");
      const { process: p } = await rpc.call("process/spawn", {});
      expect(p.argv).toEqual(["/bin/dash", "-l"]);
      await rpc.call("process/signal", { processId: p.processId, signal: "SIGKILL" });
    } finally {
      rpc.destroy();
    }
    await home.run(["down"]);
  },
  TEST_TIMEOUT_MS,
);

test("the @reboot line carries $SHELL only when cron can pass it on as is (pure)", () => {
  const tail = (shell?: string) => cronLine("/h", "/b/berth", shell).replace(/^@reboot /, "").split(" BERTH_HOME=")[0];
  expect(tail("/bin/zsh")).toBe("SHELL='/bin/zsh'");
  expect(tail("/opt/it's/zsh")).toBe(`SHELL='/opt/it'\\''s/zsh'`);
  for (const shell of [undefined, "", "zsh", "/bin/a%b", "/bin/a\nb"]) expect(cronLine("/h", "/b/berth", shell)).toBe(cronLine("/h", "/b/berth"));
});

test("startup where neither systemd --user nor crontab exists: INSTALL_FAILED saying what to install, nothing written", async () => {
  const home = newHome();
  const empty = join(home.env.HOME as string, "no-tools");
  mkdirSync(empty);
  const result = await home.run(["startup"], { env: { PATH: empty } });
  expect(result.code).toBe(1);
  expect(result.json.error.code).toBe("INSTALL_FAILED");
  expect(result.json.error.message).toContain("crontab");
  expect(result.json.error.message).toContain("berth startup");
  expect(existsSync(home.path("daemon/startup.json"))).toBe(false);
  expect((await home.run(["startup", "--disable"], { env: { PATH: empty } })).json.status).toBe("alreadyDisabled");
});
