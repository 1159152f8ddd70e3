#!/usr/bin/env bun
// Replaced by build.ts (`define`) in compiled binaries; undeclared when running from source.
declare const BERTH_COMPILED_VERSION: string | undefined;

const first = process.argv[2];
// Fast path: `--version` loads nothing else (no CLI framework, no fs), so it costs about the Bun floor.
if ((first === "--version" || first === "-V") && process.argv.length === 3) {
  const version = typeof BERTH_COMPILED_VERSION === "string" ? BERTH_COMPILED_VERSION : (await import("./version.ts")).CLI_VERSION;
  console.log(version);
} else {
  // Help text goes to pipes read by programs as often as to terminals: colour only for a terminal.
  // `process.stdout.isTTY` would build Bun's stdout stream (~2× the floor): a pipe, file or socket (the SSH
  // case) is told apart by fstat alone; only a character device costs an isatty(3) through libc.
  const { fstatSync } = await import("node:fs");
  const maybeTerminal = fstatSync(1, { throwIfNoEntry: false })?.isCharacterDevice() ?? false;
  const terminal = maybeTerminal && ((await import("./platform/ffi.ts")).isTerminal(1) ?? process.stdout.isTTY);
  if (!terminal) process.env.NO_COLOR ??= "1";
  // Everything berth creates, and everything it launches, is private to the user.
  process.umask(0o077);
  const { runCli } = await import("./cli.ts");
  process.exit(await runCli(process.argv.slice(2)));
}
export {};
