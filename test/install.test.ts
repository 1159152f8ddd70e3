// `berth install` with real compiled binaries, each case in a fresh HOME/BERTH_HOME.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { compile } from "../build.ts";
import { isLockHeld } from "../src/daemon/lock.ts";
import { PATH_BLOCK_BEGIN, PATH_BLOCK_END } from "../src/install/profile.ts";
import { eventually, homesPerTest, parseLastJsonLine, TARGET, treeSnapshot, type RunResult, type TestHome } from "./helpers/berth.ts";
import { holdLock, type Holder } from "./helpers/holder.ts";

const VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"] as const;
type V = (typeof VERSIONS)[number];
const TEST_TIMEOUT_MS = 120_000;

// Compiled once for the whole file: one real binary per version.
const binDir = mkdtempSync(join(tmpdir(), "berth-install-bins-"));
const bin = {} as Record<V, string>;
for (const version of VERSIONS) {
  bin[version] = join(binDir, `berth-${version}`);
  await compile({ version, outfile: bin[version] });
}

const holders: Holder[] = [];
afterEach(async () => {
  for (const holder of holders.splice(0)) await holder.kill();
});
const homeOf = homesPerTest(afterEach);
const newHome = () => homeOf({ install: false, prefix: "berth-install-" });
afterAll(() => rmSync(binDir, { recursive: true, force: true }));

/** HOME is the parent of BERTH_HOME in makeHome; the command link lives in $HOME/bin. */
const userHome = (t: TestHome) => t.env.HOME as string;
const linkOf = (t: TestHome) => join(t.env.BERTH_INSTALL_DIR as string, "berth");
const releaseName = (v: string) => `${v}-${TARGET}`;
const pkg = (t: TestHome, ...parts: string[]) => t.path("packages", "standalone", ...parts);
const SHELL_ENV = { SHELL: "/bin/bash", PATH: "/usr/bin:/bin" };

function install(t: TestHome, version: V, args: string[] = [], env: Record<string, string> = {}): Promise<RunResult> {
  return t.exec([bin[version], "install", ...args], { env: { ...SHELL_ENV, ...env } });
}

function expectOk(r: RunResult): any {
  if (r.code !== 0) throw new Error(`exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  expect(r.stdout.trimEnd().split("\n")).toHaveLength(1);
  return r.json;
}

function releases(t: TestHome): string[] {
  return readdirSync(pkg(t, "releases")).sort();
}

function profileBlocks(path: string): number {
  if (!existsSync(path)) return 0;
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line === PATH_BLOCK_BEGIN).length;
}

/** `current` points at an existing release whose binary runs and reports that release's version. */
function expectConsistent(t: TestHome): string {
  const target = readlinkSync(pkg(t, "current"));
  expect(target).toMatch(/^releases\/\d+\.\d+\.\d+-/);
  const name = target.slice("releases/".length);
  const out = Bun.spawnSync([pkg(t, "current", "berth"), "--version"], { stdin: "ignore" });
  expect(out.stdout.toString().trim()).toBe(name.slice(0, name.indexOf("-")));
  expect(readdirSync(pkg(t, "staging"))).toEqual([]);
  expect(readdirSync(pkg(t)).filter((e) => e.includes(".tmp-"))).toEqual([]);
  return name;
}

/**
 * Every path under $HOME (BERTH_HOME, the link folder, profiles) with its type,
 * link target, size, mode and mtime. `.bun` is Bun's own cache when berth runs from source.
 */
function snapshot(t: TestHome): string[] {
  return treeSnapshot(userHome(t));
}

describe("berth install", () => {
  test(
    "a fresh install lays out the release, current, the command link and one PATH block",
    async () => {
      const t = newHome();
      const json = expectOk(await install(t, "1.0.0"));
      const name = releaseName("1.0.0");
      expect(json).toEqual({
        status: "installed",
        version: "1.0.0",
        target: TARGET,
        managedBinaryPath: pkg(t, "current", "berth"),
        releaseDir: pkg(t, "releases", name),
        commandLink: linkOf(t),
        pathUpdated: true,
        profile: join(userHome(t), ".bashrc"),
        profiles: [join(userHome(t), ".bashrc"), join(userHome(t), ".profile")],
        pruned: [],
        cliVersion: "1.0.0",
      });
      expect(releases(t)).toEqual([name]);
      const binary = pkg(t, "releases", name, "berth");
      expect(statSync(binary).mode & 0o777).toBe(0o755);
      expect(readFileSync(binary).equals(readFileSync(bin["1.0.0"]))).toBe(true);
      expect(readlinkSync(pkg(t, "current"))).toBe(`releases/${name}`);
      expect(readlinkSync(linkOf(t))).toBe(pkg(t, "current", "berth"));
      for (const dir of [t.home, pkg(t), pkg(t, "releases"), pkg(t, "staging")]) expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(profileBlocks(join(userHome(t), ".bashrc"))).toBe(1);
      expect(profileBlocks(join(userHome(t), ".profile"))).toBe(1);
      expect(existsSync(join(userHome(t), ".zshenv"))).toBe(false);
      expectConsistent(t);

      const version = await t.exec([linkOf(t), "--version"]);
      expect(version.stdout).toBe("1.0.0\n");
      // the block really puts the link on PATH for bash
      const viaShell = await t.exec(["bash", "-c", `. "$HOME/.bashrc" && berth --version`], { env: SHELL_ENV });
      expect(viaShell.stdout).toBe("1.0.0\n");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "bash: a non-interactive ssh command finds berth past a Debian-style guard; every user line kept; an old block moved",
    async () => {
      const t = newHome();
      const guard = "# ~/.bashrc\n\n# If not running interactively, don't do anything\ncase $- in\n    *i*) ;;\n      *) return;;\nesac\n\nalias ll='ls -l'\n";
      // An earlier berth appended its block after the guard.
      const oldBlock = `${PATH_BLOCK_BEGIN}\ncase ":$PATH:" in *:"$HOME/bin":*) ;; *) export PATH="$HOME/bin:$PATH" ;; esac\n${PATH_BLOCK_END}\n`;
      writeFileSync(join(userHome(t), ".bashrc"), `${guard}\n${oldBlock}`);
      writeFileSync(join(userHome(t), ".profile"), "umask 022\n");
      const sshCommand = () =>
        t.exec(["env", "-i", `HOME=${userHome(t)}`, "SSH_CLIENT=127.0.0.1 50000 22", "PATH=/usr/bin:/bin", "bash", "-c", "command -v berth"]);
      const json = expectOk(await install(t, "1.0.0"));
      expect(json.pathUpdated).toBe(true);
      const bashrc = readFileSync(join(userHome(t), ".bashrc"), "utf8");
      expect(bashrc).toStartWith(`${PATH_BLOCK_BEGIN}\n`);
      expect(profileBlocks(join(userHome(t), ".bashrc"))).toBe(1);
      for (const line of guard.split("\n").filter((l) => l !== "")) expect(bashrc.split("\n")).toContain(line);
      expect(readFileSync(join(userHome(t), ".profile"), "utf8")).toStartWith("umask 022\n\n");
      expect(profileBlocks(join(userHome(t), ".profile"))).toBe(1);
      const found = await sshCommand();
      expect({ code: found.code, out: found.stdout.trim() }).toEqual({ code: 0, out: linkOf(t) });
      // a login shell (ssh without a command) finds it through ~/.profile
      const login = await t.exec(["env", "-i", `HOME=${userHome(t)}`, "PATH=/usr/bin:/bin", "sh", "-c", '. "$HOME/.profile"; command -v berth']);
      expect(login.stdout.trim()).toBe(linkOf(t));
      // idempotent
      const before = [readFileSync(join(userHome(t), ".bashrc"), "utf8"), readFileSync(join(userHome(t), ".profile"), "utf8")];
      expect(expectOk(await install(t, "1.0.0")).pathUpdated).toBe(false);
      expect([readFileSync(join(userHome(t), ".bashrc"), "utf8"), readFileSync(join(userHome(t), ".profile"), "utf8")]).toEqual(before);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "installing the same version again is idempotent",
    async () => {
      const t = newHome();
      expectOk(await install(t, "1.0.0"));
      const before = snapshot(t);
      const json = expectOk(await install(t, "1.0.0"));
      expect(json.status).toBe("alreadyInstalled");
      expect(json.pathUpdated).toBe(false);
      expect(json.profile).toBe(join(userHome(t), ".bashrc"));
      expect(profileBlocks(join(userHome(t), ".bashrc"))).toBe(1);
      expect(snapshot(t)).toEqual(before);
      // and through the managed binary itself (`berth install` from the link)
      expect(expectOk(await t.exec([linkOf(t), "install"], { env: SHELL_ENV })).status).toBe("alreadyInstalled");
      expect(snapshot(t)).toEqual(before);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "newer versions flip current and keep the two newest previous releases",
    async () => {
      const t = newHome();
      expectOk(await install(t, "1.0.0"));
      let json = expectOk(await install(t, "1.1.0"));
      expect(json).toMatchObject({ status: "installed", version: "1.1.0", pathUpdated: false, pruned: [] });
      expect(readlinkSync(pkg(t, "current"))).toBe(`releases/${releaseName("1.1.0")}`);
      expect(releases(t)).toEqual([releaseName("1.0.0"), releaseName("1.1.0")]);
      expect((await t.exec([linkOf(t), "--version"])).stdout).toBe("1.1.0\n");

      expectOk(await install(t, "1.2.0"));
      json = expectOk(await install(t, "1.3.0"));
      expect(json.pruned).toEqual([releaseName("1.0.0")]);
      expect(releases(t)).toEqual(["1.1.0", "1.2.0", "1.3.0"].map(releaseName));
      expect(expectConsistent(t)).toBe(releaseName("1.3.0"));
      expect((await t.exec([linkOf(t), "--version"])).stdout).toBe("1.3.0\n");
      expect(profileBlocks(join(userHome(t), ".bashrc"))).toBe(1);

      // going back to an installed version is a flip, not a copy
      json = expectOk(await install(t, "1.1.0"));
      expect(json).toMatchObject({ status: "installed", pruned: [] });
      expect(expectConsistent(t)).toBe(releaseName("1.1.0"));
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "--no-modify-path touches no profile",
    async () => {
      const t = newHome();
      const json = expectOk(await install(t, "1.0.0", ["--no-modify-path"]));
      expect(json.pathUpdated).toBe(false);
      expect(json.profile).toBeUndefined();
      expect(readdirSync(userHome(t)).filter((e) => e.startsWith("."))).toEqual([]);
      expect(readlinkSync(linkOf(t))).toBe(pkg(t, "current", "berth"));
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the profile follows $SHELL; a folder already on PATH needs none; fish is told what to run",
    async () => {
      const zsh = newHome();
      expect(expectOk(await install(zsh, "1.0.0", [], { SHELL: "/usr/bin/zsh" })).profile).toBe(join(userHome(zsh), ".zshenv"));
      expect(profileBlocks(join(userHome(zsh), ".zshenv"))).toBe(1);
      // a non-interactive zsh (what `ssh host berth …` runs) reads .zshenv
      const zshCommand = await zsh.exec(["env", "-i", `HOME=${userHome(zsh)}`, "PATH=/usr/bin:/bin", "zsh", "-c", "command -v berth"]);
      expect(zshCommand.stdout.trim()).toBe(linkOf(zsh));

      const sh = newHome();
      writeFileSync(join(userHome(sh), ".profile"), "umask 022");
      expect(expectOk(await install(sh, "1.0.0", [], { SHELL: "/bin/sh" })).profile).toBe(join(userHome(sh), ".profile"));
      expect(readFileSync(join(userHome(sh), ".profile"), "utf8")).toStartWith(`umask 022\n\n${PATH_BLOCK_BEGIN}\n`);

      // A folder under HOME on this shell's PATH still gets the block: an ssh command starts from sshd's PATH.
      const onPath = newHome();
      const underHome = expectOk(await install(onPath, "1.0.0", [], { PATH: `${onPath.env.BERTH_INSTALL_DIR}:/usr/bin:/bin` }));
      expect(underHome.pathUpdated).toBe(true);
      // A system folder already on PATH needs none.
      const system = newHome();
      const systemDir = mkdtempSync(join(tmpdir(), "berth-sysbin-"));
      const json = expectOk(await install(system, "1.0.0", [], { BERTH_INSTALL_DIR: systemDir, PATH: `${systemDir}:/usr/bin:/bin` }));
      rmSync(systemDir, { recursive: true, force: true });
      expect(json.pathUpdated).toBe(false);
      expect(json.profile).toBeUndefined();
      expect(existsSync(join(userHome(system), ".bashrc"))).toBe(false);

      const fish = newHome();
      const r = await install(fish, "1.0.0", [], { SHELL: "/usr/bin/fish" });
      const fishJson = expectOk(r);
      expect(fishJson.pathUpdated).toBe(false);
      expect(fishJson.warnings).toEqual([expect.stringContaining(`fish_add_path ${fish.env.BERTH_INSTALL_DIR}`)]);
      expect(r.stderr).toContain("fish does not read POSIX shell profiles");
      expect(readdirSync(userHome(fish)).filter((e) => e.startsWith("."))).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "three installs at once are serialized and leave a consistent layout",
    async () => {
      const t = newHome();
      const results = await Promise.all((["1.0.0", "1.1.0", "1.2.0"] as const).map((v) => install(t, v)));
      for (const r of results) expectOk(r);
      expect(releases(t)).toEqual(["1.0.0", "1.1.0", "1.2.0"].map(releaseName));
      const current = expectConsistent(t);
      expect(["1.0.0", "1.1.0", "1.2.0"].map(releaseName)).toContain(current);
      expect(profileBlocks(join(userHome(t), ".bashrc"))).toBe(1);
      expect(results.filter((r) => r.json.pathUpdated)).toHaveLength(1);

      const same = await Promise.all([install(t, "1.3.0"), install(t, "1.3.0"), install(t, "1.3.0")]);
      const statuses = same.map((r) => expectOk(r).status).sort();
      expect(statuses).toEqual(["alreadyInstalled", "alreadyInstalled", "installed"]);
      expect(expectConsistent(t)).toBe(releaseName("1.3.0"));
      // kept: the new current, the one it replaced (rollback target), and the newest other
      const newestOther = current === releaseName("1.2.0") ? releaseName("1.1.0") : releaseName("1.2.0");
      expect(releases(t)).toEqual([releaseName("1.3.0"), current, newestOther].sort());
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "leftovers of a killed install are cleaned up by the next one",
    async () => {
      const t = newHome();
      expectOk(await install(t, "1.0.0"));
      // what a SIGKILL halfway through copying leaves behind
      mkdirSync(pkg(t, "staging", "s-half"), { recursive: true });
      writeFileSync(pkg(t, "staging", "s-half", "berth"), readFileSync(bin["1.1.0"]).subarray(0, 1_000_000));
      symlinkSync(`releases/${releaseName("1.1.0")}`, pkg(t, "current.tmp-99999-1"));
      symlinkSync(pkg(t, "current", "berth"), `${linkOf(t)}.tmp-99999-1`);
      expect(expectOk(await install(t, "1.0.0")).status).toBe("alreadyInstalled");
      expectConsistent(t);
      expect(existsSync(`${linkOf(t)}.tmp-99999-1`)).toBe(false);

      // a real install SIGKILLed while it waits for install.lock
      const holder = await holdLock(pkg(t, "install.lock"));
      holders.push(holder);
      const child = Bun.spawn({ cmd: [bin["1.1.0"], "install"], env: { ...t.env, ...SHELL_ENV }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      expect(await eventually(() => isLockHeld(t.path("daemon", "daemon.lock")), 15_000)).toBe(true);
      child.kill("SIGKILL");
      expect(await child.exited).not.toBe(0);
      holder.send("release");
      await holder.exited;
      expect(expectConsistent(t)).toBe(releaseName("1.0.0"));

      // SIGKILLed at arbitrary points of a real install: current stays usable, the next install repairs
      for (const [i, delayMs] of [5, 40, 80, 150, 250].entries()) {
        const version = i % 2 === 0 ? "1.2.0" : "1.1.0";
        rmSync(pkg(t, "releases", releaseName(version)), { recursive: true, force: true });
        const victim = Bun.spawn({ cmd: [bin[version], "install"], env: { ...t.env, ...SHELL_ENV }, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
        await Bun.sleep(delayMs);
        victim.kill("SIGKILL");
        await victim.exited;
        const current = readlinkSync(pkg(t, "current"));
        const out = Bun.spawnSync([pkg(t, "current", "berth"), "--version"], { stdin: "ignore" });
        expect(current).toBe(`releases/${out.stdout.toString().trim()}-${TARGET}`);
        expectOk(await install(t, "1.0.0"));
        expect(expectConsistent(t)).toBe(releaseName("1.0.0"));
      }
    },
    TEST_TIMEOUT_MS,
  );

  // SPEC "Lifecycle rules": install holds daemon.lock as well as its own install.lock.
  const busyLocks: [string, (t: TestHome) => string][] = [
    ["install.lock", (t) => pkg(t, "install.lock")],
    ["daemon.lock", (t) => t.path("daemon", "daemon.lock")],
  ];
  for (const [name, lockOf] of busyLocks) {
    test(
      `a busy ${name} ends in LOCK_TIMEOUT naming it and changes nothing`,
      async () => {
        const t = newHome();
        expectOk(await install(t, "1.0.0"));
        const before = snapshot(t);
        const holder = await holdLock(lockOf(t));
        holders.push(holder);
        const r = await install(t, "1.1.0", [], { BERTH_LOCK_WAIT_MS: "300" });
        expect(r.code).toBe(1);
        expect(r.json.error.code).toBe("LOCK_TIMEOUT");
        expect(r.json.error.message).toContain(lockOf(t));
        expect(snapshot(t)).toEqual(before);
      },
      TEST_TIMEOUT_MS,
    );
  }

  test(
    "a rebuilt same version replaces the binary inside its release folder",
    async () => {
      const t = newHome();
      expectOk(await install(t, "1.0.0"));
      const dir = pkg(t, "releases", releaseName("1.0.0"));
      const inode = statSync(dir).ino;
      const rebuilt = join(userHome(t), "rebuilt-berth");
      writeFileSync(rebuilt, `#!/bin/sh\nexec '${bin["1.0.0"]}' "$@"\n`, { mode: 0o755 });
      // from source, BERTH_INSTALL_SOURCE names the file to install
      const json = expectOk(await t.run(["install"], { env: { ...SHELL_ENV, BERTH_INSTALL_SOURCE: rebuilt, BERTH_BUILD_VERSION: "1.0.0" } }));
      expect(json.status).toBe("installed");
      expect(statSync(dir).ino).toBe(inode);
      expect(readFileSync(join(dir, "berth"), "utf8")).toBe(readFileSync(rebuilt, "utf8"));
      expect(expectConsistent(t)).toBe(releaseName("1.0.0"));
      expect(expectOk(await install(t, "1.0.0")).status).toBe("installed");
      expect(readFileSync(join(dir, "berth")).equals(readFileSync(bin["1.0.0"]))).toBe(true);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "failures report INSTALL_FAILED and leave current as it was",
    async () => {
      const t = newHome();
      expectOk(await install(t, "1.0.0"));
      const before = snapshot(t);

      const missing = await t.run(["install"], { env: { ...SHELL_ENV, BERTH_INSTALL_SOURCE: join(userHome(t), "nope", "berth"), BERTH_BUILD_VERSION: "1.1.0" } });
      expect(missing.code).toBe(1);
      expect(missing.json.error.code).toBe("INSTALL_FAILED");
      expect(missing.json.error.message).toContain(join(userHome(t), "nope", "berth"));
      expect(missing.json.error.message).toContain(`\`current\` still points at ${releaseName("1.0.0")}`);
      expect(snapshot(t)).toEqual(before);

      // a binary that is not the version it is installed as never becomes current
      const wrong = await t.run(["install"], { env: { ...SHELL_ENV, BERTH_INSTALL_SOURCE: bin["1.0.0"], BERTH_BUILD_VERSION: "1.3.0" } });
      expect(wrong.json.error.code).toBe("INSTALL_FAILED");
      expect(wrong.json.error.message).toMatch(/says it is version "1\.0\.0", not 1\.3\.0; it was not installed and the previous release is still current/);
      expect(snapshot(t)).toEqual(before);

      const broken = join(userHome(t), "broken-berth");
      writeFileSync(broken, "#!/bin/sh\necho 'Segmentation fault' >&2\nexit 139\n", { mode: 0o755 });
      const crash = await t.run(["install"], { env: { ...SHELL_ENV, BERTH_INSTALL_SOURCE: broken, BERTH_BUILD_VERSION: "1.3.0" } });
      expect(crash.json.error.message).toMatch(/exited with status 139 on --version \(Segmentation fault\)/);
      rmSync(broken);
      expect(snapshot(t)).toEqual(before);

      // from source without BERTH_INSTALL_SOURCE there is nothing to copy
      const fromSource = await t.run(["install"], { env: SHELL_ENV });
      expect(fromSource.json.error.code).toBe("INSTALL_FAILED");
      expect(fromSource.json.error.message).toContain("BERTH_INSTALL_SOURCE");
      expect(snapshot(t)).toEqual(before);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the command link: a foreign file is refused, a berth binary or another link is replaced",
    async () => {
      const t = newHome();
      mkdirSync(dirname(linkOf(t)), { recursive: true });
      writeFileSync(linkOf(t), "#!/bin/sh\necho my own berth\n", { mode: 0o755 });
      const r = await install(t, "1.0.0");
      expect(r.json.error.code).toBe("INSTALL_FAILED");
      expect(r.json.error.message).toContain(`${linkOf(t)} exists and is a file that is not berth`);
      expect(readFileSync(linkOf(t), "utf8")).toBe("#!/bin/sh\necho my own berth\n");
      expect(existsSync(pkg(t, "current"))).toBe(false);
      expect(existsSync(join(userHome(t), ".bashrc"))).toBe(false);

      // the usual manual install: download berth into the link's folder and run it
      copyFileSync(bin["1.0.0"], linkOf(t));
      chmodSync(linkOf(t), 0o755);
      const json = expectOk(await t.exec([linkOf(t), "install"], { env: SHELL_ENV }));
      expect(json.status).toBe("installed");
      expect(readlinkSync(linkOf(t))).toBe(pkg(t, "current", "berth"));

      rmSync(linkOf(t));
      symlinkSync("/usr/bin/true", linkOf(t));
      const relinked = await install(t, "1.0.0");
      expect(expectOk(relinked).warnings).toEqual([`${linkOf(t)} pointed at /usr/bin/true; it now points at ${pkg(t, "current", "berth")}.`]);
      expect(readlinkSync(linkOf(t))).toBe(pkg(t, "current", "berth"));
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "an unsafe BERTH_HOME is refused before anything is written",
    async () => {
      const t = newHome();
      chmodSync(t.home, 0o777);
      const r = await install(t, "1.0.0");
      expect(r.json.error.code).toBe("UNSAFE_STATE");
      expect(readdirSync(t.home)).toEqual([]);
      expect(existsSync(linkOf(t))).toBe(false);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "--bootstrap runs bootstrap: app-server from the managed binary and the updater",
    async () => {
      const t = newHome();
      const json = expectOk(await install(t, "1.2.0", ["--bootstrap", "--no-modify-path"]));
      expect(json.status).toBe("installed");
      expect(json.bootstrap.status).toBe("bootstrapped");
      expect(json.bootstrap.backend).toBe("pid");
      expect(json.bootstrap.managedVersion).toBe("1.2.0");
      expect(json.bootstrap.appServerVersion).toBe("1.2.0");
      expect(json.bootstrap.autoUpdateEnabled).toBe(true);
      expect(typeof json.bootstrap.updater.pid).toBe("number");
      const stopped = expectOk(await t.exec([linkOf(t), "stop"]));
      expect(stopped.status).toBe("stopped");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "--bootstrap --no-remote-control turns remote control off; --remote-control on",
    async () => {
      const t = newHome();
      const on = expectOk(await install(t, "1.2.0", ["--bootstrap", "--remote-control", "--no-modify-path"]));
      expect(on.bootstrap.remoteControlEnabled).toBe(true);
      const off = expectOk(await install(t, "1.2.0", ["--bootstrap", "--no-remote-control", "--no-modify-path"]));
      expect(off.bootstrap.remoteControlEnabled).toBe(false);
      expect(JSON.parse(readFileSync(t.path("daemon", "settings.json"), "utf8")).remoteControlEnabled).toBe(false);
      const kept = expectOk(await install(t, "1.2.0", ["--bootstrap", "--no-modify-path"]));
      expect(kept.bootstrap.remoteControlEnabled).toBe(false);
      expectOk(await t.exec([linkOf(t), "stop"]));
    },
    TEST_TIMEOUT_MS,
  );

  test("install --help works in the compiled binary", async () => {
    const t = newHome();
    const r = await t.exec([bin["1.0.0"], "install", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--no-modify-path");
    expect(parseLastJsonLine(r.stdout)).toBeUndefined();
    expect(existsSync(pkg(t))).toBe(false);
  });
});
