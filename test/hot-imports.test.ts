/**
 * The commands clients run most (`--version`, `version`, `status`, `start`, `stop`, `connect`) load only what they
 * need: a module on their path costs every run (node:tty, brought to `connect` by one top-level import, cost a
 * compiled connect 2.3 ms, half the Bun floor, and only a hand measurement caught it). This reads the sources, as
 * the runtime would: from each command's entry modules it follows every static `import … from` / `export … from`
 * (type-only ones are erased, as at run time; into packages too), and checks that no module of the HEAVY table is
 * in the closure. A dynamic `import()` inside the closure is a cost paid only on some runs; one of a heavy module
 * must be named, with its condition, in LAZY_ON_PURPOSE. Then each command is run from source with a recorder
 * preloaded, against a running app-server: what it really loads must hold the static closure and no heavy module
 * of ours or of a package (builtins are invisible there; the static part covers them). No build: under a second.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { CLI_VERSION } from "../src/version.ts";
import { BUN, MAIN, makeHome, ROOT, type TestHome } from "./helpers/berth.ts";

type Hot = "--version" | "version" | "status" | "start" | "stop" | "connect";

const HOT: Hot[] = ["--version", "version", "status", "start", "stop", "connect"];

/** Modules no hot command may load at the top of its path (`except`: the commands that do today, and why). */
const HEAVY: { module: string | RegExp; why: string; except?: Hot[] }[] = [
  { module: "node:tty", why: "brings node:net and streams: +2.3 ms a compiled connect; bridge-tty.ts loads it for a character device only" },
  { module: "node:readline", why: "streams and events; nothing hot reads lines" },
  { module: "node:child_process", why: "streams and net; berth spawns with Bun.spawn" },
  { module: "node:net", why: "the Node socket layer; berth's sockets are Bun's" },
  { module: "node:http", why: "the Node HTTP layer; the app-server is Bun.serve" },
  { module: "node:https", why: "the Node HTTP layer; downloads use fetch" },
  { module: "node:stream", why: "only the release download pipes a stream" },
  { module: "node:stream/promises", why: "only the release download pipes a stream" },
  { module: "node:util", why: "what citty's help renderer and consola's full entry cost (~0.15× the floor)" },
  { module: "node:crypto", why: "signatures and download checksums only" },
  { module: "node:zlib", why: "the release download only" },
  { module: "node:url", why: "the release's file:// base only" },
  { module: "node:fs/promises", why: "the hot path is synchronous; the app-server's fs API is not hot" },
  { module: "node:worker_threads", why: "nothing of berth uses workers" },
  { module: "node:os", why: "paths.ts loads it only when HOME is unset (0.06-0.3 ms a command)", except: ["connect"] },
  { module: "citty", why: "loads node:util; cli.ts imports it for help and commands given arguments only" },
  { module: "consola", why: "the full entry loads node:tty and node:util (~17 ms); output.ts uses consola/core" },
  { module: /^src\/update\//, why: "the updater: update, update-loop and the keeper's steps" },
  { module: /^src\/install\/(?!semver\.ts$)/, why: "the installer (semver.ts, a pure version compare, is status's)" },
  { module: /^src\/client\//, why: "`berth remote`'s client: ssh, followers, downloads" },
  { module: /^src\/server\/(process\/|run\.ts$|remote-)/, why: "the app-server's own processes and listeners" },
  { module: /^src\/server\/api\/(?!index\.ts$|dispatch\.ts$|types\.ts$)/, why: "the API families, loaded by the app-server on a first call" },
];

/** Dynamic imports of a HEAVY module inside a hot closure, each with the condition that keeps it off most runs. */
const LAZY_ON_PURPOSE: { file: string; module: string; when: string }[] = [
  { file: "src/server/bridge-tty.ts", module: "node:tty", when: "connect's stdin is a character device (ssh -t, a person)" },
  { file: "src/cli.ts", module: "citty", when: "help, or a command that defines arguments (connect: --no-start)" },
  { file: "src/platform/paths.ts", module: "node:os", when: "HOME is unset" },
  { file: "src/serve-entry.ts", module: "src/update/loop.ts", when: "the keeper's own launch lines (update-loop, keeper-step, update-step)" },
  { file: "src/serve-entry.ts", module: "src/server/run.ts", when: "the app-server's own launch line (serve)" },
  // connect's bridge.ts imports server/serve.ts (MAX_FRAME_BYTES), which brings the app-server's API index:
  { file: "src/server/serve.ts", module: "src/server/remote-front.ts", when: "an app-server with remote control on" },
  { file: "src/server/api/index.ts", module: "src/server/api/fs.ts", when: "the app-server's first fs/* call" },
  { file: "src/server/api/index.ts", module: "src/server/api/process.ts", when: "the app-server's first process/* call" },
  { file: "src/server/api/index.ts", module: "src/server/api/system.ts", when: "the app-server's first system/* call" },
  { file: "src/server/api/index.ts", module: "src/server/api/tunnel.ts", when: "the app-server's first tunnel/* call" },
  { file: "src/server/api/index.ts", module: "src/server/process/ledger.ts", when: "an app-server starting over a ledger left by a crash" },
];

const NODE_BUILTINS = new Set(builtinModules);
const transpilers = { ts: new Bun.Transpiler({ loader: "ts" }), js: new Bun.Transpiler({ loader: "js" }) };

/** A module's name in the tables: `node:x`, `bun`/`bun:x`, `src/…` for ours, the specifier for a package's entry. */
type Module = { name: string; file?: string };

function resolveImport(specifier: string, importer: string): Module {
  if (specifier.startsWith("node:") || specifier === "bun" || specifier.startsWith("bun:")) return { name: specifier };
  if (NODE_BUILTINS.has(specifier)) return { name: `node:${specifier}` };
  const file = specifier.startsWith(".") || specifier.startsWith("/") ? resolve(dirname(importer), specifier) : Bun.resolveSync(specifier, dirname(importer));
  const ours = relative(ROOT, file);
  return { name: specifier.startsWith(".") && !ours.startsWith("..") && !ours.includes("node_modules") ? ours : isBare(specifier) ? specifier : file, file };
}

const isBare = (specifier: string) => !specifier.startsWith(".") && !specifier.startsWith("/");

/** Static and dynamic imports of one file, as the runtime sees them (type-only imports are erased). */
function importsOf(file: string): { module: Module; lazy: boolean }[] {
  if (!/\.(ts|js|mjs)$/.test(file)) return []; // package.json and the like import nothing
  const source = readFileSync(file, "utf8").replace(/^#!.*/, ""); // the transpiler refuses a shebang
  const found = transpilers[file.endsWith(".ts") ? "ts" : "js"].scanImports(source);
  return found.map((entry) => ({ module: resolveImport(entry.path, file), lazy: entry.kind === "dynamic-import" || entry.kind === "require-call" }));
}

/** One of our files, by its path from the repository's root. */
const ours = (path: string): Module => ({ name: path, file: join(ROOT, path) });

/**
 * What each command is sure to load (src/main.ts dispatches): `--version` is main.ts alone; every other command
 * is main.ts, stdio.ts, cli.ts, its module in src/commands, and what that module imports lazily: its run's domain
 * module, loaded on every run (connect's server/bridge.ts).
 */
function entriesOf(command: Hot): Module[] {
  if (command === "--version") return [ours("src/main.ts")];
  const own = ours(`src/commands/${command}.ts`);
  const lazy = importsOf(own.file as string).filter((entry) => entry.lazy).map((entry) => entry.module);
  return [...["src/main.ts", "src/stdio.ts", "src/cli.ts"].map(ours), own, ...lazy];
}

/** The modules loaded with the entries, and the dynamic imports made from inside that closure. */
function closureOf(entries: Module[]): { loaded: Set<string>; lazy: { file: string; module: string }[] } {
  const loaded = new Set<string>();
  const lazy: { file: string; module: string }[] = [];
  const visited = new Set<string>();
  const stack: Module[] = [...entries];
  while (stack.length > 0) {
    const module = stack.pop() as Module;
    loaded.add(module.name);
    if (!module.file || visited.has(module.file)) continue;
    visited.add(module.file);
    for (const { module: imported, lazy: isLazy } of importsOf(module.file)) {
      if (isLazy) lazy.push({ file: module.name, module: imported.name });
      else stack.push(imported);
    }
  }
  return { loaded, lazy };
}

const matches = (pattern: string | RegExp, name: string) => (typeof pattern === "string" ? pattern === name : pattern.test(name));
const heavyFor = (command: Hot, name: string) => HEAVY.some((row) => !row.except?.includes(command) && matches(row.module, name));
const isHeavy = (name: string) => HEAVY.some((row) => matches(row.module, name));

describe("hot commands load no heavy module at the top of their path", () => {
  const closures = Object.fromEntries(HOT.map((command) => [command, closureOf(entriesOf(command))])) as Record<Hot, ReturnType<typeof closureOf>>;

  test("the reader sees what the runtime loads: relative and re-exported files, builtins (bare too), packages; not a type-only import", () => {
    const fixture = "test/fixtures/hot-imports";
    const { loaded, lazy } = closureOf([ours(`${fixture}/entry.ts`)]);
    expect([...loaded].sort()).toEqual(["defu", "node:fs", "node:os", `${fixture}/entry.ts`, `${fixture}/far.ts`, `${fixture}/near.ts`]);
    expect(lazy).toEqual([{ file: `${fixture}/entry.ts`, module: "node:crypto" }]);
    // A package is read inside: defu's entry imports nothing, citty's brings node:util.
    expect(loaded).not.toContain("node:util");
    expect(importsOf(Bun.resolveSync("citty", join(ROOT, "src"))).map((entry) => entry.module.name)).toContain("node:util");
  });

  test("--version loads main.ts and nothing else", () => {
    expect([...closures["--version"].loaded]).toEqual(["src/main.ts"]);
  });

  for (const command of HOT) {
    test(`${command}: no HEAVY module is imported statically`, () => {
      const heavy = [...closures[command].loaded].filter((name) => heavyFor(command, name)).sort();
      const why = heavy.map((name) => `${name}: ${HEAVY.find((row) => matches(row.module, name))?.why}`);
      expect(why).toEqual([]);
      // An exception no longer needed only excuses nothing: said, not failed (a branch merged meanwhile may have removed the import).
      const loaded = [...closures[command].loaded];
      const unneeded = HEAVY.filter((row) => row.except?.includes(command) && !loaded.some((name) => matches(row.module, name)));
      if (unneeded.length > 0) console.warn(`hot-imports: ${command} no longer loads ${unneeded.map((row) => String(row.module)).join(", ")}: remove it from HEAVY's except`);
    });
  }

  test("every dynamic import of a HEAVY module from a hot path is in LAZY_ON_PURPOSE (with its condition)", () => {
    const found = new Map<string, { file: string; module: string }>();
    for (const command of HOT) {
      for (const edge of closures[command].lazy) if (isHeavy(edge.module)) found.set(`${edge.file} → ${edge.module}`, edge);
    }
    const listed = LAZY_ON_PURPOSE.map(({ file, module }) => `${file} → ${module}`);
    expect([...found.keys()].filter((edge) => !listed.includes(edge)).sort()).toEqual([]);
    // A row no longer needed only excuses nothing: said, not failed (a branch merged meanwhile may have removed the import).
    const stale = listed.filter((edge) => !found.has(edge));
    if (stale.length > 0) console.warn(`hot-imports: LAZY_ON_PURPOSE rows no hot path needs any more (remove them): ${stale.join("; ")}`);
  });
});

/**
 * What each command's run really loads, with a running app-server, recorded by a preload (a resolver plugin that
 * notes every file it sees imported). Builtins never pass a plugin, so this sees our modules and packages' files
 * only: it checks that the reader above agrees with the runtime, and catches a heavy module of ours or a package
 * taken on every run through a dynamic import, which the static closure cannot see.
 */
const RECORDER = `
const { dirname, resolve } = require("node:path");
const seen = new Set();
Bun.plugin({ name: "record-loads", setup(build) {
  build.onResolve({ filter: /.*/ }, (args) => {
    if (args.importer) seen.add(args.importer);
    if (args.importer && (args.path.startsWith(".") || args.path.startsWith("/"))) seen.add(resolve(dirname(args.importer), args.path));
    return undefined;
  });
}});
process.on("exit", () => require("node:fs").writeFileSync(process.env.BERTH_TEST_LOADED_FILE, [...seen].join("\\n")));
`;

/** Runs taken on every such run that load a HEAVY module (invisible to the static reader), and why they are let be. */
const RUNTIME_EXCEPTIONS: { command: Hot; module: string; why: string }[] = [
  // Measured: a compiled connect that skips citty is no faster (A/B, 40 rounds, CPU time ratio 0.99-1.04).
  { command: "connect", module: "citty", why: "connect defines --no-start, so cli.ts's runParsed hands every connect to citty's parser" },
];

/** The name a loaded file has in the tables: `src/…` for ours, the package (`citty`, `consola`) for a package's file. */
function moduleNameOf(file: string): string {
  const inPackage = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(file);
  if (inPackage) return inPackage[1] === "consola" && inPackage[2] === "dist/core.mjs" ? "consola/core" : (inPackage[1] as string);
  return relative(ROOT, file);
}

const RUN_STATUS: Record<Hot, string> = { stop: "stopped", start: "started", "--version": CLI_VERSION, version: "running", status: "running", connect: "connected" };

describe("hot commands at run time (from source, with a running app-server)", () => {
  let home: TestHome;
  const loaded = async (command: Hot): Promise<Set<string>> => {
    const record = home.path("..", `loaded-${command}`);
    const args = command === "connect" ? ["connect", "--no-start"] : [command];
    const run = await home.exec([BUN, "--preload", home.path("..", "recorder.js"), MAIN, ...args], { env: { BERTH_TEST_LOADED_FILE: record } });
    // The real path of each: a stop that stops, a start that starts, the rest against the running app-server.
    expect({ command, code: run.code, status: run.json?.status ?? run.stdout.trim(), stderr: run.stderr }).toMatchObject({ command, code: 0, status: RUN_STATUS[command] });
    return new Set(readFileSync(record, "utf8").split("\n").map(moduleNameOf));
  };

  beforeAll(async () => {
    home = makeHome({ prefix: "berth-hot-imports-" });
    writeFileSync(home.path("..", "recorder.js"), RECORDER);
    expect((await home.run(["start"])).json).toMatchObject({ status: "started" });
  });
  afterAll(async () => {
    await home.run(["stop"]);
    await home.cleanup();
  });

  // Order matters: stop, then start (the real start path), then the rest against the running app-server.
  for (const command of ["stop", "start", "--version", "version", "status", "connect"] as Hot[]) {
    test(`${command}: every module of the static closure is loaded, and no HEAVY one of ours or a package's is`, async () => {
      const names = await loaded(command);
      const ourModules = [...closureOf(entriesOf(command)).loaded].filter((name) => name.startsWith("src/") || name === "package.json");
      expect({ command, notLoaded: ourModules.filter((name) => !names.has(name)) }).toEqual({ command, notLoaded: [] });
      const excused = RUNTIME_EXCEPTIONS.filter((row) => row.command === command).map((row) => row.module);
      const heavy = [...names].filter((name) => heavyFor(command, name) && !excused.includes(name));
      expect({ command, heavy }).toEqual({ command, heavy: [] });
      const unneeded = excused.filter((module) => !names.has(module));
      if (unneeded.length > 0) console.warn(`hot-imports: RUNTIME_EXCEPTIONS no longer needed for ${command} (remove them): ${unneeded.join(", ")}`);
    }, 60_000);
  }
});
