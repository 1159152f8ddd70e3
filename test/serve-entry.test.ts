/**
 * The app-server's launch line bypasses the CLI framework (src/serve-entry.ts):
 * only the exact argv the starter produces takes that path, and it keeps the
 * CLI's output contract (one JSON line on stdout, exit 0/1/2).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { appServerArgs } from "../src/daemon/app-server.ts";
import { daemonAction, daemonServeArgs, UPDATE_LOOP_ARGV } from "../src/serve-entry.ts";
import { readFileSync, realpathSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { eventually, keepersOf, loopBinaryOf, readJson, homesPerTest } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);

describe("daemon serve fast path", () => {
  test("daemonServeArgs takes exactly the starter's argv and nothing else", () => {
    const table: [string[], ReturnType<typeof daemonServeArgs>][] = [
      [["serve", "--listen", "unix:///s"], { listen: "unix:///s", remoteControl: false }],
      [["serve", "--listen", "unix:///s", "--remote-control"], { listen: "unix:///s", remoteControl: true }],
      [["serve"], undefined],
      [["serve", "--help"], undefined],
      [["serve", "--listen", "unix:///s", "--help"], undefined],
      [["serve", "--listen", "unix:///s", "--remote-control", "x"], undefined],
      [["serve", "--listen=unix:///s"], undefined],
      [["serve", "--listen", "tcp://x"], undefined],
      [["start", "--listen", "unix:///s"], undefined],
    ];
    for (const [argv, expected] of table) expect(daemonServeArgs(argv)).toEqual(expected);
  });

  test("what the starter launches is what the fast path accepts", () => {
    const ctx = { socket: { path: "/run/x.sock" } } as Parameters<typeof appServerArgs>[0];
    for (const remoteControlEnabled of [false, true]) {
      const settings = { remoteControlEnabled } as Parameters<typeof appServerArgs>[1];
      expect(daemonServeArgs(appServerArgs(ctx, settings))).toEqual({ listen: "unix:///run/x.sock", remoteControl: remoteControlEnabled });
    }
  });

  test("daemonAction: the keeper's exact `update-loop` and the serve line take the fast path, nothing else", () => {
    const table: [string[], boolean][] = [
      [["update-loop"], true],
      [[...UPDATE_LOOP_ARGV], true],
      [["serve", "--listen", "unix:///s"], true],
      [["update-loop", "--help"], false],
      [["update-loop", "x"], false],
      [["keeper-step"], true],
      [["keeper-step", "x"], false],
      [["update-step"], true],
      [["update-step", "--help"], false],
      [["serve"], false],
      [["status"], false],
      [[], false],
    ];
    for (const [argv, fast] of table) expect([argv, daemonAction(argv) !== undefined]).toEqual([argv, fast]);
  });

  test("the keeper that start launches runs the fast path's exact argv, then becomes the sh loop", async () => {
    const home = newHome();
    // What launchUpdater runs after the binary (daemon/updater.ts) is the line the fast path takes.
    expect(daemonAction([...UPDATE_LOOP_ARGV])).toBeDefined();
    expect((await home.run(["start"])).json.status).toBe("started");
    const keeper = readJson(home.path("daemon", "updater.pid")).pid as number;
    expect(keepersOf(home)).toEqual([keeper]);
    expect(await eventually(() => readFileSync(home.path("daemon", "updater.log"), "utf8").includes("keeping the app-server only"), 20_000)).toBe(true);
    // The same pid, now `sh -c SCRIPT update-loop <the release's binary> <version>`.
    expect(await eventually(() => loopBinaryOf(keeper) === realpathSync(home.path("packages/standalone/current/berth")), 20_000)).toBe(true);
    expect(keepersOf(home)).toEqual([keeper]);
  }, 30_000);

  test("a bad --listen on the fast path: exit 2, exactly one JSON line with USAGE", async () => {
    const home = newHome();
    const result = await home.run(["serve", "--listen", "unix://"]);
    expect(result.code).toBe(2);
    expect(result.stdout.trimEnd().split("\n")).toHaveLength(1);
    expect(result.json).toMatchObject({ status: "error", error: { code: "USAGE" } });
    expect(result.stderr).toContain("--listen takes unix://PATH");
  }, 30_000);
});

describe("what a plain start evaluates", () => {
  /** The modules of `entry` and everything it imports statically (dynamic imports are separate chunks, loaded on use). */
  async function staticModules(entry: string): Promise<string[]> {
    const root = join(import.meta.dir, "..");
    const result = await Bun.build({ entrypoints: [join(root, entry)], target: "bun", format: "esm", splitting: true, metafile: true, external: ["bun:ffi"] });
    if (!result.success || !result.metafile) throw new Error(`cannot bundle ${entry}: ${result.logs.join("\n")}`);
    const outputs = result.metafile.outputs;
    const chunkOf = (path: string) => outputs[path] ?? outputs[`./${path.replace(/^\.\//, "")}`];
    const entryChunk = Object.keys(outputs).find((path) => outputs[path]?.entryPoint !== undefined);
    if (!entryChunk) throw new Error(`no entry chunk for ${entry}`);
    const seen = new Set<string>();
    const visit = (path: string) => {
      const key = path.replace(/^\.\//, "");
      if (seen.has(key)) return;
      seen.add(key);
      for (const imported of chunkOf(key)?.imports ?? []) if (imported.kind === "import-statement") visit(imported.path);
    };
    visit(entryChunk);
    return [...seen].flatMap((path) => Object.keys(chunkOf(path)?.inputs ?? {})).map((input) => relative(root, resolve(input)));
  }

  test("the app-server's own graph leaves remote control's and the client's modules to their first use", async () => {
    const modules = await staticModules("src/server/run.ts");
    expect(modules).toContain("src/server/serve.ts");
    expect(modules).toContain("src/daemon/log.ts");
    for (const lazy of ["src/server/remote-listen.ts", "src/server/token.ts", "src/server/client.ts"]) expect(modules).not.toContain(lazy);
  });
});
