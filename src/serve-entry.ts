/**
 * The app-server's own launch line, run without the CLI framework: the
 * daemon is started thousands of times more often than a human types
 * `berth serve`, and citty's load (node:util) costs it ~1.2× the floor in
 * time-to-ready and ~2.6 MB of resident memory (measured in bench/). Only the
 * exact argv that `appServerArgs` (daemon/app-server.ts) produces takes this
 * path; anything else (`serve --help`, other spellings) goes through cli.ts.
 */
import { takeWarnings } from "./diagnostics.ts";
import { errorObject, exitCodeFor, logger, renderJson, writeOutput } from "./output.ts";

export type DaemonServe = { listen: string; remoteControl: boolean };

/** Pure: `serve --listen unix://PATH [--remote-control]`, exactly, or undefined. */
export function daemonServeArgs(argv: readonly string[]): DaemonServe | undefined {
  const [command, flag, listen, ...rest] = argv;
  if (command !== "serve" || flag !== "--listen" || listen === undefined || !listen.startsWith("unix://")) return undefined;
  if (rest.length === 0) return { listen, remoteControl: false };
  if (rest.length === 1 && rest[0] === "--remote-control") return { listen, remoteControl: true };
  return undefined;
}

/** Runs the app-server; the same output contract as cli.ts: one JSON line on stdout, exit 0/1/2. */
export async function runDaemonServe(args: DaemonServe): Promise<number> {
  let stdout: string;
  let exitCode = 0;
  try {
    const { serve } = await import("./server/run.ts");
    const result = await serve(args);
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
