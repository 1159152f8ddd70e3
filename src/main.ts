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

const argv = process.argv.slice(2);
if ((argv[0] === "--version" || argv[0] === "-V") && argv.length === 1) {
  // Loads nothing else (no CLI framework, no fs) and opens no file: about the Bun floor.
  console.log(typeof BERTH_COMPILED_VERSION === "string" ? BERTH_COMPILED_VERSION : (await import("./version.ts")).CLI_VERSION);
} else {
  // A closed descriptor 0–2 would be reused by the next file berth opens.
  const stdio = await import("./stdio.ts");
  stdio.reopenClosedStdio();
  // An ignored SIGCHLD or a blocked mask from the parent would break every wait on a child, and pass to the daemons.
  await stdio.repairInheritedSignals();
  if (!(await stdoutIsTerminal(stdio))) process.env.NO_COLOR ??= "1";
  // Everything berth creates, and everything it launches, is private to the user.
  process.umask(0o077);
  // The daemons' own launch lines (app-server, keeper) skip the CLI framework (see serve-entry.ts); everything else is cli.ts.
  const entry = ["serve", "update-loop", "keeper-step", "update-step"].includes(argv[0] as string) ? await import("./serve-entry.ts") : undefined;
  const daemon = entry?.daemonAction(argv);
  process.exit(entry && daemon ? await entry.runDaemon(daemon) : await (await import("./cli.ts")).runCli(argv));
}
export {};
