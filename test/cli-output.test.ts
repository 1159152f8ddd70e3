/**
 * Output rules and CLI papercuts (issue 7): a reader that goes away, a closed
 * stderr, no command, mistyped commands and flags, `help <command>`, empty
 * option values, `bootstrap --no-remote-control`.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import { checkArgs } from "../src/cli.ts";
import { flockHolderFromProcLocks } from "../src/daemon/lock.ts";
import { closestMatch, editDistance } from "../src/suggest.ts";
import { holdLock } from "./helpers/holder.ts";
import { serveDirectory } from "./helpers/release-server.ts";
import { BUN, eventually, homesPerTest, isAlive, MAIN, parseLastJsonLine, readJson, runProcess, type TestHome } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);

/** Runs a shell line in which `$BERTH` runs berth from source. */
function shell(home: TestHome, line: string) {
  return runProcess(["sh", "-c", line.replaceAll("$BERTH", '"$BUN" "$MAIN"')], { ...home.env, BUN, MAIN });
}

/** The app-server record matches a live server that answers as that pid. */
async function expectRecordedServer(home: TestHome): Promise<number> {
  const record = readJson(home.path("daemon/app-server.pid"));
  expect(isAlive(record.pid)).toBe(true);
  const version = await home.run(["version"]);
  expect(version.json.pid).toBe(record.pid);
  return record.pid;
}

describe("a reader that goes away", () => {
  test("start through a pipe closed by its reader: no stack trace, exit 0, the server recorded", async () => {
    const home = newHome();
    const errFile = join(home.env.HOME as string, "start.err");
    const rcFile = join(home.env.HOME as string, "start.rc");
    // `| true`: the reader exits at once, so berth's JSON line meets EPIPE.
    const r = await shell(home, `{ $BERTH start 2>'${errFile}'; echo $? >'${rcFile}'; } | true`);
    expect(r.code).toBe(0);
    expect(await eventually(() => existsSync(rcFile) && readFileSync(rcFile, "utf8").trim() !== "")).toBe(true);
    const stderr = readFileSync(errFile, "utf8");
    expect(stderr).not.toContain("EPIPE");
    expect(stderr).not.toMatch(/^\s*at |^\d+ \| /m);
    expect(readFileSync(rcFile, "utf8").trim()).toBe("0");
    await expectRecordedServer(home);
  });

  test("an error object through a closed pipe: no stack trace, the usual exit code", async () => {
    const home = newHome({ install: false });
    const errFile = join(home.env.HOME as string, "e");
    const rcFile = join(home.env.HOME as string, "rc");
    await shell(home, `{ $BERTH start 2>'${errFile}'; echo $? >'${rcFile}'; } | true`);
    expect(readFileSync(rcFile, "utf8").trim()).toBe("1");
    expect(readFileSync(errFile, "utf8")).not.toContain("EPIPE");
  });

  test("start with stderr closed still starts, prints its JSON and exits 0", async () => {
    const home = newHome();
    const r = await shell(home, `$BERTH start 2>&-`);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(r.json.status).toBe("started");
    await expectRecordedServer(home);
  });

  test("start with stdout and stderr closed still starts and exits 0", async () => {
    const home = newHome();
    const r = await shell(home, `$BERTH start >&- 2>&-; echo "rc=$?" >'${join(home.env.HOME as string, "rc")}'`);
    expect(r.code).toBe(0);
    expect(readFileSync(join(home.env.HOME as string, "rc"), "utf8").trim()).toBe("rc=0");
    await expectRecordedServer(home);
  });
});

describe("usage", () => {
  test("no command: the USAGE object on stdout, help on stderr, exit 2", async () => {
    const home = newHome({ install: false });
    const r = await home.run([]);
    expect(r.code).toBe(2);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(r.json).toMatchObject({ status: "error", error: { code: "USAGE" } });
    expect(r.stderr).toContain("USAGE berth");
  });

  const mistakes: { args: string[]; suggestion: string }[] = [
    { args: ["strat"], suggestion: '"start"' },
    { args: ["stauts"], suggestion: '"status"' },
    { args: ["update", "--releas", "1.0.0"], suggestion: '"--release"' },
    { args: ["bootstrap", "--no-auto-updat"], suggestion: '"--no-auto-update"' },
  ];
  for (const { args, suggestion } of mistakes) {
    test(`berth ${args.join(" ")}: USAGE with "did you mean ${suggestion}" on stderr`, async () => {
      const home = newHome({ install: false });
      const r = await home.run(args);
      expect(r.code).toBe(2);
      expect(r.json.error.code).toBe("USAGE");
      expect(r.stderr).toContain(`Did you mean ${suggestion}?`);
    });
  }

  test("berth help start shows start's help, not the root help", async () => {
    const home = newHome({ install: false });
    const r = await home.run(["help", "start"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("USAGE berth start");
    const root = await home.run(["--help"]);
    expect(r.stdout).not.toBe(root.stdout);
  });

  for (const args of [["update", "--release="], ["update", "--release", ""]]) {
    test(`berth ${JSON.stringify(args)} is USAGE and installs nothing`, async () => {
      const home = newHome({ install: false });
      const r = await home.run(args, { env: { BERTH_RELEASE_BASE_URL: "http://127.0.0.1:9/none" } });
      expect(r.code).toBe(2);
      expect(r.json.error).toMatchObject({ code: "USAGE", message: expect.stringContaining("--release") });
    });
  }
});

describe("bootstrap --no-remote-control", () => {
  test("turns remote control off", async () => {
    const home = newHome({ settings: { remoteControlEnabled: true } });
    const r = await home.run(["bootstrap", "--no-remote-control", "--no-auto-update"]);
    expect(r.code).toBe(0);
    expect(r.json.remoteControlEnabled).toBe(false);
    expect(r.json.remoteControl).toBeUndefined();
    expect(readJson(home.path("daemon/settings.json")).remoteControlEnabled).toBe(false);
    const again = await home.run(["bootstrap", "--no-auto-update"]);
    expect(again.json.remoteControlEnabled).toBe(false);
  });
});

describe("error messages that say what to do", () => {
  test("update --release 9.9.9: DOWNLOAD_FAILED says it is not published at the base (file:// and http)", async () => {
    const home = newHome();
    const root = join(home.env.HOME as string, "releases");
    mkdirSync(root);
    const server = await serveDirectory(root);
    try {
      for (const base of [`file://${root}`, server.url]) {
        const r = await home.run(["update", "--release", "9.9.9"], { env: { BERTH_RELEASE_BASE_URL: base } });
        expect(r.json.error.code).toBe("DOWNLOAD_FAILED");
        expect(r.json.error.message).toStartWith(`9.9.9 is not published at ${base}`);
        expect(r.json.error.message).not.toContain("ENOENT");
      }
    } finally {
      await server.stop();
    }
  });

  test.skipIf(process.platform !== "linux")("LOCK_TIMEOUT names the pid that holds the lock", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    const holder = await holdLock(home.path("daemon/daemon.lock"));
    try {
      const r = await home.run(["start"], { env: { BERTH_LOCK_WAIT_MS: "300" } });
      expect(r.json.error.code).toBe("LOCK_TIMEOUT");
      expect(r.json.error.message).toContain(`(pid ${holder.pid}: `);
      expect(r.json.error.message).toContain("hold-lock.ts");
    } finally {
      await holder.kill();
    }
  });

  test("/proc/locks parsing (pure)", () => {
    const dev = 0xfe00; // major 0xfe, minor 0
    const text = "1: POSIX  ADVISORY  WRITE 99 fe:00:5678 0 EOF\n2: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF\n3: FLOCK  ADVISORY  WRITE 77 08:01:5678 0 EOF\n";
    expect(flockHolderFromProcLocks(text, dev, 5678)).toBe(1234);
    expect(flockHolderFromProcLocks(text, 0x0801, 5678)).toBe(77);
    expect(flockHolderFromProcLocks(text, dev, 1)).toBeUndefined();
    expect(flockHolderFromProcLocks("", dev, 5678)).toBeUndefined();
    expect(flockHolderFromProcLocks("4: FLOCK  ADVISORY  WRITE 55 fe:00:5678 0 EOF\n5: -> FLOCK  ADVISORY  WRITE 66 fe:00:5678 0 EOF", dev, 5678)).toBe(55);
  });
});

describe("did you mean (pure)", () => {
  const distances: { a: string; b: string; d: number }[] = [
    { a: "start", b: "start", d: 0 },
    { a: "strat", b: "start", d: 1 },
    { a: "stauts", b: "status", d: 1 },
    { a: "--releas", b: "--release", d: 1 },
    { a: "", b: "stop", d: 4 },
    { a: "kitten", b: "sitting", d: 3 },
  ];
  for (const { a, b, d } of distances) test(`editDistance(${a}, ${b}) = ${d}`, () => expect(editDistance(a, b)).toBe(d));

  const names = ["start", "stop", "restart", "status", "version", "update", "install"];
  const cases: { input: string; match: string | undefined }[] = [
    { input: "strat", match: "start" },
    { input: "stauts", match: "status" },
    { input: "sotp", match: "stop" },
    { input: "versoin", match: "version" },
    { input: "inst", match: "install" },
    { input: "zzz", match: undefined },
    { input: "deploy", match: undefined },
  ];
  for (const { input, match } of cases) test(`closestMatch(${input}) = ${match}`, () => expect(closestMatch(input, names)).toBe(match));
});

describe("version and status: one JSON line, warnings and errors on stderr too", () => {
  test("version when nothing runs: the NOT_RUNNING object alone on stdout, its message on stderr, exit 1", async () => {
    const home = newHome();
    const r = await home.run(["version"]);
    expect(r.code).toBe(1);
    expect(r.stdout.trimEnd().split("\n")).toHaveLength(1);
    expect(r.json).toMatchObject({ status: "error", error: { code: "NOT_RUNNING" } });
    expect(r.stderr).toContain(r.json.error.message);
  });

  test("status with a corrupt pidfile: its warning on stderr and in the one JSON line, exit 0", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    writeFileSync(home.path("daemon/app-server.pid"), "not a record");
    const r = await home.run(["status"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split("\n")).toHaveLength(1);
    expect(r.json.warnings?.join("\n")).toContain("was not a valid pid record");
    expect(r.stderr).toContain("was not a valid pid record");
  });

  test("version or status with anything after it: USAGE for an unknown option, help for --help", async () => {
    const home = newHome();
    for (const name of ["version", "status"]) {
      const unknown = await home.run([name, "--jsno"]);
      expect(unknown.code).toBe(2);
      expect(unknown.json.error.code).toBe("USAGE");
      const help = await home.run([name, "--help"]);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`berth ${name}`);
    }
  });
});

describe("switches given a value", () => {
  // citty reads any value but "false" as true, so `--follow=no` followed and `startup --disable=0` disabled.
  const defs = { follow: { type: "boolean" }, name: { type: "string" } } as const;
  const cases: Array<[string[], "ok" | "usage"]> = [
    [["--follow"], "ok"],
    [["--no-follow"], "ok"],
    [["--follow=true"], "ok"],
    [["--follow=false"], "ok"],
    [["--follow=no"], "usage"],
    [["--follow=0"], "usage"],
    [["--follow="], "usage"],
    [["--follow=TRUE"], "usage"],
    [["--no-follow=true"], "usage"],
    [["--no-follow=false"], "usage"],
    [["--name=no"], "ok"],
  ];
  for (const [argv, expected] of cases) {
    test(`${argv.join(" ")}: ${expected}`, () => {
      let code: string | undefined;
      try {
        checkArgs(argv, defs, "logs");
      } catch (error) {
        code = (error as { code?: string }).code;
      }
      expect(code).toBe(expected === "ok" ? undefined : "USAGE");
    });
  }

  test("through the CLI: `logs --follow=no` is USAGE (exit 2) and follows nothing; `logs --follow=false` prints and exits", async () => {
    const home = newHome();
    const wrong = await home.run(["logs", "--follow=no"]);
    expect(wrong.code).toBe(2);
    expect(wrong.json.error).toMatchObject({ code: "USAGE" });
    expect(wrong.json.error.message).toContain("--follow is a switch");
    const off = await home.run(["logs", "--follow=false"]);
    expect(off.code).toBe(0);
    expect(off.json).toMatchObject({ status: "logs", lines: [] });
  });
});

test("parseLastJsonLine sanity for the shell helper", () => {
  expect(parseLastJsonLine('noise\n{"a":1}\n')).toEqual({ a: 1 });
});
