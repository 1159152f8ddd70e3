/**
 * A writer SIGKILLed mid-write leaves `<file>.tmp-<pid>-<n>`; a later process
 * with the same pid (every run of a container starts at the same pid) must
 * still write its state, and never open, follow or remove what was left.
 */
import { afterEach, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LEFTOVER_TEMP_AGE_MS, leftoverTemps } from "../src/daemon/doctor.ts";
import { tempPathFor, writeFileAtomic } from "../src/platform/fs.ts";
import { machineId } from "../src/update/machine-id.ts";
import { BUN, MAIN, tempDirsPerTest, homesPerTest, type TestHome } from "./helpers/berth.ts";

/** Leftover names planted ahead of the writer: more than any command writes before the one under test. */
const PLANTED_NAMES = 16;
const SLOW_TEST_MS = 60_000;

const tempDir = tempDirsPerTest(afterEach, "berth-temp-names-");
const newHome = homesPerTest(afterEach);

/**
 * Plants leftovers at the next temp names this process will use for `path`
 * (this pid, the counters after the current one): regular files, and at one
 * of them a symlink to `victim`, at another a FIFO (opening it would hang the writer). Returns a check that
 * all are untouched.
 */
function plantLeftovers(path: string, pid: number, firstCounter: number, victim: string): () => void {
  writeFileSync(victim, "victim\n");
  const names: string[] = [];
  for (let n = firstCounter; n < firstCounter + PLANTED_NAMES; n++) names.push(`${path}.tmp-${pid}-${n}`);
  const [linked, fifo, ...files] = names;
  symlinkSync(victim, linked!);
  expect(Bun.spawnSync(["mkfifo", fifo!]).exitCode).toBe(0);
  for (const name of files) writeFileSync(name, `left by a killed writer: ${name}\n`);
  return () => {
    expect(lstatSync(linked!).isSymbolicLink()).toBe(true);
    expect(lstatSync(fifo!).isFIFO()).toBe(true);
    expect(readlinkSync(linked!)).toBe(victim);
    expect(readFileSync(victim, "utf8")).toBe("victim\n");
    for (const name of files) expect(readFileSync(name, "utf8")).toBe(`left by a killed writer: ${name}\n`);
  };
}

/** A fresh BERTH_HOME with its daemon/ folder. */
function homeWithDaemonDir(): { home: TestHome; daemonDir: string } {
  const home = newHome();
  const daemonDir = home.path("daemon");
  mkdirSync(daemonDir, { mode: 0o700 });
  return { home, daemonDir };
}

/** A temp file as a writer killed long ago left it. */
function plantOld(path: string): void {
  writeFileSync(path, "half");
  const past = (Date.now() - 2 * LEFTOVER_TEMP_AGE_MS) / 1000;
  utimesSync(path, past, past);
}

/** doctor's `leftovers` finding. */
async function leftoversFinding(home: TestHome) {
  const { json } = await home.run(["doctor"], { env: { BERTH_RELEASE_BASE_URL: "http://127.0.0.1:9" } });
  return (json.findings as Array<{ check: string; ok: boolean; message: string; fix?: string }>).find((f) => f.check === "leftovers");
}

/** The counter the next tempPathFor of this process will use. */
function nextCounter(): number {
  return Number(tempPathFor("x").split("-").pop()) + 1;
}

test("writeFileAtomic writes past leftovers at its own pid's temp names and leaves them as they were", () => {
  const dir = tempDir();
  const path = join(dir, "state.json");
  const untouched = plantLeftovers(path, process.pid, nextCounter(), join(dir, "victim"));
  writeFileAtomic(path, '{"ok":true}\n');
  expect(readFileSync(path, "utf8")).toBe('{"ok":true}\n');
  writeFileAtomic(path, '{"ok":2}\n');
  expect(readFileSync(path, "utf8")).toBe('{"ok":2}\n');
  untouched();
});

test("machineId is created past a leftover at its temp name", () => {
  const dir = tempDir();
  const path = join(dir, "machine-id");
  const untouched = plantLeftovers(path, process.pid, nextCounter(), join(dir, "victim"));
  const id = machineId(dir);
  expect(id).toMatch(/^[0-9a-f]{32}$/);
  expect(readFileSync(path, "utf8")).toBe(`${id}\n`);
  untouched();
});

test(
  "a real berth at pid 1 (a fresh pid namespace, like a container) writes its state past a killed pid 1's leftovers",
  async () => {
    const { home, daemonDir } = homeWithDaemonDir();
    const wanted = join(daemonDir, "wanted.json");
    const untouched = plantLeftovers(wanted, 1, 1, join(daemonDir, "victim"));
    const down = await home.exec(["unshare", "--pid", "--fork", BUN, MAIN, "down"]);
    expect(down.json?.status, down.stderr).toBe("down");
    expect(JSON.parse(readFileSync(wanted, "utf8"))).toMatchObject({ appServer: "stopped", down: true });
    untouched();
    expect(existsSync(join(daemonDir, "victim"))).toBe(true);
  },
  SLOW_TEST_MS,
);

test("leftoverTemps: temp names of killed writers, once older than any write takes", () => {
  const now = 1_000_000_000;
  const old = now - LEFTOVER_TEMP_AGE_MS;
  const table: Array<[string, number, boolean]> = [
    ["wanted.json.tmp-1-1", old, true],
    ["settings.json.tmp-4242-17-0a1b2c3d4e5f", old - 1, true],
    ["keeper.json.tmp-7-3", now - 1_000, false],
    ["wanted.json", old, false],
    ["notes.tmp-backup", old, false],
    ["wanted.json.tmp-1-1.bak", old, false],
  ];
  expect(leftoverTemps(table.map(([name, mtimeMs]) => ({ name, mtimeMs })), now)).toEqual(table.filter(([, , left]) => left).map(([name]) => name).sort());
});

test(
  "doctor names the old leftovers with an rm that removes them, and not a write in flight",
  async () => {
    const { home, daemonDir } = homeWithDaemonDir();
    const old = [join(daemonDir, "wanted.json.tmp-1-1"), join(daemonDir, "keeper.json.tmp-1-2-00ff00ff00ff")];
    const fresh = join(daemonDir, "settings.json.tmp-1-3");
    for (const path of old) plantOld(path);
    writeFileSync(fresh, "in flight");
    const found = await leftoversFinding(home);
    expect(found).toMatchObject({ ok: false });
    for (const path of old) expect(found!.message).toContain(path.split("/").pop()!);
    expect(found!.message).not.toContain("settings.json.tmp");
    expect(Bun.spawnSync(["sh", "-c", found!.fix!]).exitCode).toBe(0);
    for (const path of old) expect(existsSync(path)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect(await leftoversFinding(home)).toMatchObject({ ok: true });
  },
  SLOW_TEST_MS,
);

test(
  "doctor's rm for leftovers with hostile names (quotes, newlines, $(…), backquotes, leading dashes) removes exactly them and runs nothing",
  async () => {
    const { home, daemonDir } = homeWithDaemonDir();
    const cwd = tempDir();
    const names = ["$(touch PWNED).tmp-1-1", "'; touch PWNED; '.tmp-1-2", "x\ntouch PWNED\n.tmp-1-3", "`touch PWNED`.tmp-1-4", "-rf .tmp-1-5", "a\\'b\".tmp-1-6"];
    const keep = join(daemonDir, "settings.json");
    writeFileSync(keep, "{}");
    for (const name of names) plantOld(join(daemonDir, name));
    const found = await leftoversFinding(home);
    expect(found).toMatchObject({ ok: false });
    expect(Bun.spawnSync(["sh", "-c", found!.fix!], { cwd }).exitCode).toBe(0);
    for (const name of names) expect(existsSync(join(daemonDir, name))).toBe(false);
    expect(existsSync(join(cwd, "PWNED"))).toBe(false);
    expect(existsSync(keep)).toBe(true);
  },
  SLOW_TEST_MS,
);

test(
  "doctor still names a leftover while a writer renames its temps in the same folder (a temp gone before its lstat is no failure)",
  async () => {
    const { home, daemonDir } = homeWithDaemonDir();
    plantOld(join(daemonDir, "wanted.json.tmp-1-1"));
    // A real writer, as fast as it goes: its temps appear in doctor's listing and are renamed before their lstat.
    const fsModule = JSON.stringify(join(import.meta.dir, "..", "src", "platform", "fs.ts"));
    const script = `const { writeFileAtomic } = await import(${fsModule}); for (;;) writeFileAtomic(${JSON.stringify(join(daemonDir, "keeper.json"))}, "x", 0o600, { durable: false });`;
    const writer = Bun.spawn([BUN, "-e", script], { stdout: "ignore", stderr: "ignore" });
    try {
      // Before: about one run in four said "no state folder … yet" (the lstat's ENOENT), hiding the leftover.
      for (let run = 0; run < 20; run += 1) {
        const found = await leftoversFinding(home);
        expect(found).toMatchObject({ ok: false });
        expect(found!.message).toContain("wanted.json.tmp-1-1");
      }
    } finally {
      writer.kill("SIGKILL");
      await writer.exited;
    }
  },
  SLOW_TEST_MS,
);
