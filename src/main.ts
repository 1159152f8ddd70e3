#!/usr/bin/env bun
// Replaced by build.ts (`define`) in compiled binaries; undeclared when running from source.
declare const BERTH_COMPILED_VERSION: string | undefined;

/**
 * Help text goes to pipes read by programs as often as to terminals: colour only for a terminal.
 * `process.stdout.isTTY` would build Bun's stdout stream (~2× the floor): a pipe, file or socket (the SSH
 * case) is told apart by fstat alone; only a character device costs an isatty(3) through libc.
 */
async function stdoutIsTerminal(stdio: typeof import("./stdio.ts")): Promise<boolean> {
  if (!stdio.isCharacterDevice(1)) return false;
  return (await import("./platform/ffi.ts")).isTerminal(1) ?? process.stdout.isTTY;
}

/** Pure: whether citty may render help for these arguments (no command, `help`, or --help/-h before any `--`). */
function mayRenderHelp(args: string[]): boolean {
  const own = args.includes("--") ? args.slice(0, args.indexOf("--")) : args;
  return own.length === 0 || own[0] === "help" || own.includes("--help") || own.includes("-h");
}

/**
 * Commands that start no process and wait on none: what a parent left (platform/inherited.ts) cannot touch them.
 * The ones clients run most; a command added here must never spawn (test/hostile-env.test.ts runs them from a
 * parent that ignores SIGCHLD).
 */
const LAUNCHES_NOTHING: ReadonlySet<string> = new Set(["version", "status", "stop"]);
/** The daemons' own launch lines (app-server, keeper and its steps). */
const DAEMON_ENTRIES: readonly string[] = ["serve", "update-loop", "keeper-step", "update-step"];

const argv = process.argv.slice(2);
if ((argv[0] === "--version" || argv[0] === "-V") && argv.length === 1) {
  // Loads nothing else (no CLI framework, no fs) and opens no file: about the Bun floor.
  console.log(typeof BERTH_COMPILED_VERSION === "string" ? BERTH_COMPILED_VERSION : (await import("./version.ts")).CLI_VERSION);
  // Exits rather than ending the script: with BUN_OPTIONS=--watch or --hot in the environment Bun would keep waiting.
  process.exit(0);
} else {
  // A closed descriptor 0–2 would be reused by the next file berth opens.
  const stdio = await import("./stdio.ts");
  stdio.reopenClosedStdio();
  // An ignored SIGCHLD or a blocked mask from the parent would break every wait on a child, and pass to the daemons;
  // Bun's runtime options would follow them. The hottest commands start nothing and skip the ~0.18 M instructions.
  const daemonEntry = DAEMON_ENTRIES.includes(argv[0] as string);
  if (!LAUNCHES_NOTHING.has(argv[0] as string)) {
    await stdio.repairInheritedSignals({ daemon: daemonEntry });
    stdio.dropBunRuntimeEnv();
  }
  // Only help is coloured; NO_COLOR set for anything else would pass to the daemons and every user's terminal.
  if (mayRenderHelp(argv) && !(await stdoutIsTerminal(stdio))) process.env.NO_COLOR ??= "1";
  // Everything berth creates, and the daemons it launches, are private to the user. Users' processes get back
  // the umask of whoever first ran berth (BERTH_USER_UMASK, platform/inherited.ts): as in their ssh session.
  const inheritedUmask = process.umask(0o077);
  process.env.BERTH_USER_UMASK ??= inheritedUmask.toString(8);
  // The daemons' own launch lines (app-server, keeper) skip the CLI framework (see serve-entry.ts); everything else is cli.ts.
  const entry = daemonEntry ? await import("./serve-entry.ts") : undefined;
  const daemon = entry?.daemonAction(argv);
  process.exit(entry && daemon ? await entry.runDaemon(daemon) : await (await import("./cli.ts")).runCli(argv));
}
export {};
