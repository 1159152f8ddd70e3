/**
 * Logs: time-stamped lines, rotation while the writer runs, `berth logs`
 * and `logs --follow` across a rotation. Real processes, real files.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { appendLog, LOG_KEEP_MAX, rotationPlan, stampLines } from "../src/daemon/log.ts";
import { lastLines } from "../src/daemon/logs.ts";
import { BUN, eventually, homesPerTest, installRelease, MAIN, readJson } from "./helpers/berth.ts";

const ISO_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;
const TICKER = join(import.meta.dir, "fixtures", "log-ticker.ts");

const newHome = homesPerTest(afterEach);

describe("pure parts", () => {
  const tails = [
    { text: "", n: 5, out: [] },
    { text: "a\nb\nc\n", n: 2, out: ["b", "c"] },
    { text: "a\nb\nc", n: 5, out: ["a", "b", "c"] },
    { text: "a\nb\n", n: 0, out: [] },
  ];
  for (const { text, n, out } of tails) test(`lastLines(${JSON.stringify(text)}, ${n})`, () => expect(lastLines(text, n)).toEqual(out));

  test("rotation plan: oldest dropped, each shifted, the live log becomes .1", () => {
    expect(rotationPlan("/l", 3)).toEqual([["/l.3", undefined], ["/l.2", "/l.3"], ["/l.1", "/l.2"], ["/l", "/l.1"]]);
    expect(rotationPlan("/l", 1)).toEqual([["/l.1", undefined], ["/l", "/l.1"]]);
    expect(rotationPlan("/l", 0)).toEqual([["/l", undefined]]);
    // A huge logs.keep is still a whole number: the plan stops at LOG_KEEP_MAX (before: a billion steps, out of memory).
    const huge = rotationPlan("/l", 1e9);
    expect(huge).toHaveLength(LOG_KEEP_MAX + 1);
    expect(huge[0]).toEqual([`/l.${LOG_KEEP_MAX}`, undefined]);
    expect(huge.at(-1)).toEqual(["/l", "/l.1"]);
  });

  test("every line gets the time", () => {
    expect(stampLines("a\nb", new Date(0))).toBe("1970-01-01T00:00:00.000Z a\n1970-01-01T00:00:00.000Z b\n");
  });
});

describe("captureStdio", () => {
  test("starts from the limits it is given: the first lines read no settings, and rotate by those limits", async () => {
    const home = newHome({ install: false });
    const log = home.path("daemon.log");
    const asked = home.path("asked");
    // A real process routes its output; readLimits leaves a mark each time it is asked (it must not be, at first).
    const script = [
      `import { appendFileSync } from "node:fs";`,
      `import { captureStdio } from ${JSON.stringify(join(import.meta.dir, "..", "src", "daemon", "log.ts"))};`,
      `import { writeOutput } from ${JSON.stringify(join(import.meta.dir, "..", "src", "stdio.ts"))};`,
      `captureStdio(${JSON.stringify(log)}, () => { appendFileSync(${JSON.stringify(asked)}, "asked\\n"); return { maxBytes: 1 << 20, keep: 3 }; }, { maxBytes: 100, keep: 1 });`,
      `for (let i = 0; i < 5; i += 1) writeOutput(i % 2 ? 2 : 1, "line " + i + " " + "x".repeat(40) + "\\n");`,
    ].join("\n");
    const child = Bun.spawn({ cmd: [BUN, "-e", script], stdout: "ignore", stderr: "pipe" });
    expect(await child.exited).toBe(0);
    expect(existsSync(asked)).toBe(false);
    // ~66-byte lines under a 100-byte limit with keep 1: one line per file, the older ones dropped.
    expect(readFileSync(log, "utf8")).toMatch(/^\S+Z line 4 x+\n$/);
    expect(readFileSync(`${log}.1`, "utf8")).toMatch(/^\S+Z line 3 x+\n$/);
    expect(existsSync(`${log}.2`)).toBe(false);
  });
});

describe("a symlink planted at a log's path", () => {
  test("appendLog refuses it (UNSAFE_STATE), rotating or not; the file it points at is untouched", () => {
    const home = newHome({ install: false });
    const outside = join(home.home, "..", "outside.txt");
    writeFileSync(outside, "precious\n");
    const log = home.path("updater.log");
    symlinkSync(outside, log);
    expect(() => appendLog(log, "line")).toThrow(expect.objectContaining({ code: "UNSAFE_STATE" }));
    expect(() => appendLog(log, "line", { maxBytes: 1, keep: 2 })).toThrow(expect.objectContaining({ code: "UNSAFE_STATE" }));
    expect(readFileSync(outside, "utf8")).toBe("precious\n");
    expect(lstatSync(log).isSymbolicLink()).toBe(true);
    expect(existsSync(`${log}.1`)).toBe(false);
  });

  test("the running keeper writes nothing through a symlinked updater.log, and keeps the app-server", async () => {
    const home = newHome();
    const boot = await home.run(["bootstrap", "--no-auto-update"]);
    expect(boot.json.status).toBe("bootstrapped");
    const log = home.path("daemon/updater.log");
    expect(await eventually(() => readFileSync(log, "utf8").includes("watching"), 20_000)).toBe(true);
    const outside = join(home.home, "..", "outside.log");
    writeFileSync(outside, "");
    renameSync(log, `${log}.moved`);
    symlinkSync(outside, log);
    // A crash makes the keeper log ("restarting now", "answers"), which must not land in `outside`.
    process.kill(boot.json.pid, "SIGKILL");
    const answersAgain = async () => {
      const status = (await home.run(["status"])).json;
      return status.appServer.state === "running" && status.appServer.pid !== boot.json.pid && status.appServer.answering === true;
    };
    expect(await eventually(answersAgain, 20_000, 200)).toBe(true);
    expect(readFileSync(outside, "utf8")).toBe("");
    expect(readJson(home.path("daemon/updater.pid")).pid).toBe(boot.json.updater.pid);
    rmSync(log);
  }, 60_000);
});

describe("berth logs with something planted at the log's path", () => {
  /** A home whose app-server.log is made by `plant` (after mkfifo etc.); `berth logs` must answer at once. */
  const planted = (plant: (log: string) => void) => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    plant(home.path("daemon/app-server.log"));
    return home;
  };
  const cases: [string, (log: string) => void][] = [
    ["a FIFO (no writer: an open for reading would wait for ever)", (log) => void Bun.spawnSync(["mkfifo", log])],
    ["a symlink to /dev/zero (a read that never ends)", (log) => symlinkSync("/dev/zero", log)],
    ["a symlink to a file outside BERTH_HOME", (log) => symlinkSync("/etc/hostname", log)],
    ["a FIFO as the newest rotated file, the live log short", (log) => (writeFileSync(log, "2026-01-01T00:00:00.000Z one\n"), void Bun.spawnSync(["mkfifo", `${log}.1`]))],
  ];
  for (const [name, plant] of cases) {
    test(`${name}: UNSAFE_STATE, one JSON object, at once`, async () => {
      const home = planted(plant);
      const result = await home.run(["logs", "-n", "5"], { timeoutMs: 20_000 });
      expect(result.code).toBe(1);
      expect(result.json.error.code).toBe("UNSAFE_STATE");
      expect(result.stdout.trim().split("\n")).toHaveLength(1);
    }, 30_000);
  }

  test("--follow does not follow a log replaced by a symlink to /dev/zero; it reads the real log once it is back", async () => {
    const home = newHome();
    const log = home.path("daemon/app-server.log");
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    appendLog(log, "first");
    const child = Bun.spawn({ cmd: [BUN, MAIN, "logs", "--follow", "-n", "5"], env: home.env, stdout: "pipe", stderr: "ignore" });
    try {
      let text = "";
      void (async () => {
        for await (const chunk of child.stdout) text += new TextDecoder().decode(chunk);
      })();
      expect(await eventually(() => text.includes("first"), 20_000)).toBe(true);
      rmSync(log);
      symlinkSync("/dev/zero", log);
      // The follower has noticed the change and let go of the old (deleted) file: it has acted on the link.
      const holdsOldLog = () => {
        try {
          return readdirSync(`/proc/${child.pid}/fd`).some((fd) => {
            try {
              return readlinkSync(`/proc/${child.pid}/fd/${fd}`) === `${log} (deleted)`;
            } catch {
              return false; // closed meanwhile
            }
          });
        } catch {
          return true; // not readable yet: not known to have let go
        }
      };
      expect(await eventually(() => !holdsOldLog(), 20_000)).toBe(true);
      rmSync(log);
      appendLog(log, "after");
      expect(await eventually(() => text.includes("after"), 20_000)).toBe(true);
      // Nothing from /dev/zero: every object is the first one or a line of the real log.
      const objects = text.trim().split("\n").map((line) => JSON.parse(line));
      expect(objects.slice(1).map((o: { line: string }) => o.line.replace(ISO_LINE, ""))).toEqual(["after"]);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
  }, 60_000);
});

describe("daemon logs", () => {
  test("app-server and keeper lines start with an ISO time; logs and logs --updater print them", async () => {
    const home = newHome();
    expect((await home.run(["bootstrap", "--no-auto-update"])).json.status).toBe("bootstrapped");
    expect(await eventually(() => existsSync(home.path("daemon/updater.log")) && readFileSync(home.path("daemon/updater.log"), "utf8").includes("watching"))).toBe(true);
    for (const log of ["app-server.log", "updater.log"]) {
      const lines = readFileSync(home.path("daemon", log), "utf8").trimEnd().split("\n");
      expect(lines.length).toBeGreaterThan(0);
      for (const line of lines) expect(line).toMatch(ISO_LINE);
    }
    const logs = await home.run(["logs", "-n", "1"]);
    expect(logs.json).toMatchObject({ status: "logs", path: home.path("daemon/app-server.log") });
    expect(logs.json.lines.length).toBe(1);
    expect(logs.json.lines[0]).toMatch(/listening on/);
    const updater = await home.run(["logs", "--updater"]);
    expect(updater.json.path).toBe(home.path("daemon/updater.log"));
    expect(updater.json.lines.some((line: string) => line.includes("keeping the app-server only"))).toBe(true);
    expect((await home.run(["logs", "-n", "x"])).json.error.code).toBe("USAGE");
  }, 60_000);

  test("a running server's log rotates at logs.maxBytes keeping logs.keep; nothing lost in between; it keeps logging", async () => {
    const home = newHome({ install: false, settings: { logs: { maxBytes: 4_096, keep: 2 } } });
    installRelease(home.home, "0.1.0", `#!/bin/sh\nBERTH_BUILD_VERSION='0.1.0' exec '${BUN}' --preload '${TICKER}' '${MAIN}' "$@"\n`);
    expect((await home.run(["start"])).json.status).toBe("started");
    const log = home.path("daemon/app-server.log");
    expect(await eventually(() => existsSync(`${log}.2`), 20_000)).toBe(true);
    const ticks = () => {
      const text = [`${log}.2`, `${log}.1`, log].map((path) => (existsSync(path) ? readFileSync(path, "utf8") : "")).join("");
      return text.split("\n").filter((line) => line.includes(" tick "));
    };
    // Rotation is not atomic with our reads: retry until one consistent snapshot.
    let seen: number[] = [];
    expect(await eventually(() => {
      const lines = ticks();
      if (!lines.every((line) => ISO_LINE.test(line))) return false;
      seen = lines.map((line) => Number(line.split(" tick ")[1]));
      return seen.length > 10 && seen.every((n, i) => i === 0 || n === (seen[i - 1] as number) + 1);
    }, 10_000, 5)).toBe(true);
    expect(existsSync(`${log}.3`)).toBe(false);
    for (const path of [`${log}.2`, `${log}.1`]) expect(readFileSync(path).length).toBeLessThanOrEqual(4_096);
    // It keeps logging, and still answers.
    const last = seen[seen.length - 1] as number;
    expect(await eventually(() => ticks().some((line) => Number(line.split(" tick ")[1]) > last + 50))).toBe(true);
    expect((await home.run(["version"])).json.status).toBe("running");
  }, 60_000);

  test("logs -n N reaches into the newest rotated file when the live one is short", async () => {
    const home = newHome();
    const { mkdirSync } = await import("node:fs");
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    const log = home.path("daemon/app-server.log");
    for (const line of ["a", "b", "c"]) appendLog(log, line);
    appendLog(log, "d", { maxBytes: 1, keep: 3 });
    const result = await home.run(["logs", "-n", "3"]);
    expect(result.json.lines.map((line: string) => line.replace(ISO_LINE, ""))).toEqual(["b", "c", "d"]);
  });

  test("logs --follow prints the first object, then one {line} per new line, across a rotation", async () => {
    const home = newHome();
    const log = home.path("daemon/app-server.log");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    appendLog(log, "old line");
    const child = Bun.spawn({ cmd: [BUN, MAIN, "logs", "--follow", "-n", "5"], env: home.env, stdout: "pipe", stderr: "ignore" });
    try {
      const reader = child.stdout.getReader();
      let text = "";
      const objects = () => text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
      const waitObjects = async (count: number) => {
        const deadline = Date.now() + 20_000;
        while (objects().length < count && Date.now() < deadline) {
          const chunk = await Promise.race([reader.read(), Bun.sleep(deadline - Date.now()).then(() => undefined)]);
          if (!chunk || chunk.done) break;
          text += new TextDecoder().decode(chunk.value);
        }
        return objects();
      };
      const [first] = await waitObjects(1);
      expect(first).toMatchObject({ status: "logs", path: log });
      expect(first.lines[0]).toMatch(/old line$/);
      appendLog(log, "one");
      appendLog(log, "two", { maxBytes: 1, keep: 2 }); // rotates first, then writes into the new file
      appendLog(log, "three");
      const all = await waitObjects(4);
      expect(all.slice(1).map((o: { line: string }) => o.line.replace(ISO_LINE, ""))).toEqual(["one", "two", "three"]);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
  }, 60_000);
});
