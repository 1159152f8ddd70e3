/**
 * The one place that turns a command's result (or failure) into output:
 * exactly one JSON line on stdout, human text on stderr, exit 0/1/2.
 */
import type { ArgsDef, CommandDef, ParsedArgs } from "citty";
import { defineCommand, isInteractiveExit, SELF_PARSING_COMMANDS } from "./commands/_shared.ts";
import { commands } from "./commands/index.ts";
import { takeWarnings } from "./diagnostics.ts";
import { BerthError } from "./errors.ts";
import { errorObject, exitCodeFor, logger, renderJson, writeOutput } from "./output.ts";
import { workingForLong } from "./platform/jit.ts";
import { deferredSignals, deferTerminalSignals } from "./signals.ts";
import { isStreamingResult } from "./streaming.ts";
import { didYouMean } from "./suggest.ts";
import { CLI_VERSION } from "./version.ts";

const HELP_FLAGS = new Set(["--help", "-h"]);
const VERSION_FLAGS = new Set(["--version", "-V"]);
/**
 * Commands that may die on SIGHUP/SIGINT as usual: they change nothing, or
 * they stream (and a hangup is how they end), or they run in the foreground on
 * purpose. Every other command — every mutating one, present or future —
 * defers those signals until it has finished (see signals.ts).
 */
export const INTERRUPTIBLE_COMMANDS: ReadonlySet<string> = new Set([
  "serve", "update-loop", "version", "status", "connect", "logs", "doctor", "remote",
]);

type Output = { stdout: string; stderr?: string; exitCode: number };

async function rootCommand(): Promise<CommandDef<any>> {
  const subCommands: Record<string, CommandDef<any>> = {};
  for (const [name, load] of Object.entries(commands)) {
    const command = await load();
    // The list shows each command's first line; its own --help shows the example, environment and output too.
    const meta = (typeof command.meta === "function" ? await command.meta() : await command.meta) ?? {};
    subCommands[name] = { ...command, meta: { ...meta, description: meta.description?.split("\n")[0] } };
  }
  return defineCommand({
    meta: { name: "berth", version: CLI_VERSION, description: "Keeps a per-user app-server running on this machine" },
    subCommands,
  });
}

/** citty's help renderer, loaded only for help (its module loads node:util). */
async function renderUsage(command: CommandDef<any>, parent?: CommandDef<any>): Promise<string> {
  return (await import("citty")).renderUsage(command, parent);
}

/**
 * What citty's `runCommand` returns, without loading citty when there is
 * nothing for it to do: a command given no arguments that defines none, and
 * has no hooks or subcommands, is just its `run` with empty `args` — the
 * lifecycle commands, run thousands of times by clients, skip the ~0.15× floor
 * of citty's node:util. Anything else goes through citty.
 */
async function runParsed(command: CommandDef<any>, defs: ArgsDef, rawArgs: string[]): Promise<{ result: unknown }> {
  const plain = rawArgs.length === 0 && Object.keys(defs).length === 0 && !command.subCommands && !command.setup && !command.cleanup && !command.plugins;
  if (!plain) return (await import("citty")).runCommand(command, { rawArgs });
  return { result: await command.run?.({ rawArgs, args: { _: [] } as unknown as ParsedArgs, cmd: command, data: undefined }) };
}

/** Names a user may type for a command's options, with their dashes. */
function optionNames(defs: ArgsDef): string[] {
  const names: string[] = [];
  for (const [name, def] of Object.entries(defs)) {
    names.push(`--${name}`);
    if (def.type === "boolean") names.push(`--no-${name}`);
  }
  return names;
}

/** Pure: rejects flags and positionals a command does not define (citty itself is lenient). */
export function checkArgs(argv: string[], defs: ArgsDef, command: string): void {
  for (let i = 0; i < argv.length; i += 1) {
    const token = argv[i] as string;
    if (token === "--") break;
    if (!token.startsWith("-")) throw new BerthError("USAGE", `unexpected argument ${JSON.stringify(token)} for \`berth ${command}\`; see \`berth ${command} --help\`.`);
    const [rawName, inlineValue] = token.replace(/^--?/, "").split(/=(.*)/s, 2) as [string, string | undefined];
    const negated = rawName.startsWith("no-") ? rawName.slice(3) : undefined;
    const def = defs[rawName] ?? (negated !== undefined && defs[negated]?.type === "boolean" ? defs[negated] : undefined);
    if (!def) {
      const typed = token.split("=")[0] as string;
      throw new BerthError("USAGE", `unknown option ${typed} for \`berth ${command}\`.${didYouMean(typed, optionNames(defs))} See \`berth ${command} --help\`.`);
    }
    if (def.type === "boolean" && inlineValue !== undefined) {
      // citty reads any value but "false" as true: `--follow=no` would follow, `--disable=0` would disable.
      const switchName = def === defs[rawName] ? rawName : (negated as string);
      if (switchName !== rawName || (inlineValue !== "true" && inlineValue !== "false")) {
        throw new BerthError("USAGE", `option ${token} of \`berth ${command}\`: --${switchName} is a switch; write --${switchName} or --no-${switchName} (or --${switchName}=true / =false).`);
      }
    }
    if (def.type === "string") {
      const value = inlineValue ?? argv[i + 1];
      if (value === undefined || value === "" || (inlineValue === undefined && value.startsWith("--"))) {
        throw new BerthError("USAGE", `option --${rawName} of \`berth ${command}\` needs a value.`);
      }
      if (inlineValue === undefined) i += 1;
    }
  }
}

async function loadCommand(name: string): Promise<CommandDef<any>> {
  const load = commands[name];
  if (!load) {
    const visible = Object.keys(commands).filter((command) => !command.startsWith("_") && command !== "update-loop");
    throw new BerthError("USAGE", `unknown command ${JSON.stringify(name)}.${didYouMean(name, visible)} Run \`berth --help\` for the list.`);
  }
  return load();
}

async function execute(argv: string[]): Promise<Output> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    const help = await renderUsage(await rootCommand());
    const object = errorObject(new BerthError("USAGE", "no command given; run `berth --help` for the list of commands."));
    return { stdout: renderJson(object), stderr: `${help}\n`, exitCode: 2 };
  }
  if (name === "help" && rest[0] !== undefined) return execute([rest[0], "--help"]);
  if (HELP_FLAGS.has(name) || name === "help") return { stdout: `${await renderUsage(await rootCommand())}\n`, exitCode: 0 };
  if (VERSION_FLAGS.has(name)) return { stdout: `${CLI_VERSION}\n`, exitCode: 0 };
  const command = await loadCommand(name);
  // After `--` the words belong to another program (`remote HOST run -- ls --help`).
  const ownArgs = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  if (ownArgs.some((arg) => HELP_FLAGS.has(arg))) {
    return { stdout: `${await renderUsage(command, await rootCommand())}\n`, exitCode: 0 };
  }
  const defs = ((typeof command.args === "function" ? await command.args() : await command.args) ?? {}) as ArgsDef;
  if (!SELF_PARSING_COMMANDS.has(name)) checkArgs(rest, defs, name);
  if (!INTERRUPTIBLE_COMMANDS.has(name)) deferTerminalSignals();
  const { result } = await runParsed(command, defs, rest);
  if (isInteractiveExit(result)) return { stdout: "", exitCode: result.exitCode };
  const warnings = takeWarnings();
  for (const warning of warnings) logger.warn(warning);
  if (isStreamingResult(result)) {
    // The first line is the command's JSON object; after it the stream owns stdout and picks the exit code.
    writeOutput(1, renderJson(result.firstLine));
    workingForLong();
    return { stdout: "", exitCode: await result.run() };
  }
  const body = { ...(result as object), ...(warnings.length > 0 ? { warnings } : {}) };
  return { stdout: renderJson(body), exitCode: 0 };
}

/** Runs one command; never throws, whatever happened to stdout or stderr. */
export async function runCli(argv: string[]): Promise<number> {
  let output: Output;
  try {
    output = await execute(argv);
  } catch (error) {
    for (const warning of takeWarnings()) logger.warn(warning);
    const object = errorObject(error);
    if (object.error.code === "INTERNAL") logger.error(error);
    else logger.error(object.error.message);
    output = { stdout: renderJson(object), exitCode: exitCodeFor(error) };
  }
  if (output.stderr) writeOutput(2, output.stderr);
  const signals = deferredSignals();
  if (signals.length > 0) logger.warn(`${signals.join(" and ")} arrived while berth was changing state; it finished first.`);
  if (output.stdout) writeOutput(1, output.stdout);
  return output.exitCode;
}
