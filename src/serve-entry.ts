/**
 * The daemons' own launch lines, run without the CLI framework: the
 * app-server and the keeper are started thousands of times more often than a
 * human types `berth serve`, and citty with every command's module (cli.ts
 * loads them all) costs the app-server ~1.2× the floor in time-to-ready and
 * ~2.6 MB of resident memory, and the keeper more (measured in bench/). Only
 * the exact argv that `appServerArgs` (daemon/app-server.ts) and
 * `launchUpdater` (daemon/updater.ts) produce takes this path; anything else
 * (`serve --help`, other spellings) goes through cli.ts.
 */
import { takeWarnings } from "./diagnostics.ts";
import { errorObject, exitCodeFor, logger, renderJson, writeOutput } from "./output.ts";

export type DaemonServe = { listen: string; remoteControl: boolean };

/** The keeper's launch line, after the binary: `launchUpdater` and the loop's re-exec use exactly this. */
export const UPDATE_LOOP_ARGV: readonly string[] = ["update-loop"];
/** What the keeper's sh loop runs for each step (src/update/keeper-sh.ts): only ever these exact lines. */
export const KEEPER_STEP_COMMAND = "keeper-step";
export const UPDATE_STEP_COMMAND = "update-step";

/** Pure: `serve --listen unix://PATH [--remote-control]`, exactly, or undefined. */
export function daemonServeArgs(argv: readonly string[]): DaemonServe | undefined {
  const [command, flag, listen, ...rest] = argv;
  if (command !== "serve" || flag !== "--listen" || listen === undefined || !listen.startsWith("unix://")) return undefined;
  if (rest.length === 0) return { listen, remoteControl: false };
  if (rest.length === 1 && rest[0] === "--remote-control") return { listen, remoteControl: true };
  return undefined;
}

/** Pure: what a daemon's exact launch line runs (`serve --listen …`, `update-loop`, `keeper-step`, `update-step`), or undefined for anything else. */
export function daemonAction(argv: readonly string[]): (() => Promise<object>) | undefined {
  const serveArgs = daemonServeArgs(argv);
  if (serveArgs) return async () => (await import("./server/run.ts")).serve(serveArgs);
  if (argv.length === UPDATE_LOOP_ARGV.length && argv.every((arg, i) => arg === UPDATE_LOOP_ARGV[i])) {
    return async () => (await import("./update/loop.ts")).runUpdateLoop();
  }
  if (argv.length === 1 && argv[0] === KEEPER_STEP_COMMAND) return async () => (await import("./update/loop.ts")).runKeeperStep();
  if (argv.length === 1 && argv[0] === UPDATE_STEP_COMMAND) return async () => (await import("./update/loop.ts")).runUpdateStep();
  return undefined;
}

/** Runs a daemon; the same output contract as cli.ts: one JSON line on stdout, exit 0/1/2. */
export async function runDaemon(action: () => Promise<object>): Promise<number> {
  let stdout: string;
  let exitCode = 0;
  try {
    const result = await action();
    const warnings = takeWarnings();
    for (const warning of warnings) logger.warn(warning);
    stdout = renderJson({ ...result, ...(warnings.length > 0 ? { warnings } : {}) });
  } catch (error) {
    for (const warning of takeWarnings()) logger.warn(warning);
    const object = errorObject(error);
    if (object.error.code === "INTERNAL") logger.error(error);
    else logger.error(object.error.message);
    stdout = renderJson(object);
    exitCode = exitCodeFor(error);
  }
  writeOutput(1, stdout);
  return exitCode;
}
