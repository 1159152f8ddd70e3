/**
 * The one place that turns a command's result (or failure) into output:
 * exactly one JSON line on stdout, human text on stderr, exit 0/1/2.
 */
import { defineCommand, renderUsage, runCommand, type ArgsDef, type CommandDef } from "citty";
import { isInteractiveExit, SELF_PARSING_COMMANDS } from "./commands/_shared.ts";
import { commands } from "./commands/index.ts";
import { takeWarnings } from "./diagnostics.ts";
import { BerthError } from "./errors.ts";
import { errorObject, exitCodeFor, logger, renderJson } from "./output.ts";
import { CLI_VERSION } from "./version.ts";

const HELP_FLAGS = new Set(["--help", "-h"]);
const VERSION_FLAGS = new Set(["--version", "-V"]);

async function rootCommand(): Promise<CommandDef<any>> {
  const subCommands: Record<string, CommandDef<any>> = {};
  for (const [name, load] of Object.entries(commands)) subCommands[name] = await load();
  return defineCommand({
    meta: { name: "berth", version: CLI_VERSION, description: "Keeps a per-user app-server running on this machine" },
    subCommands,
  });
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
    if (!def) throw new BerthError("USAGE", `unknown option ${token} for \`berth ${command}\`; see \`berth ${command} --help\`.`);
    if (def.type === "string" && inlineValue === undefined) {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) throw new BerthError("USAGE", `option --${rawName} of \`berth ${command}\` needs a value.`);
      i += 1;
    }
  }
}

async function execute(argv: string[]): Promise<{ stdout: string; exitCode: number }> {
  const [name, ...rest] = argv;
  if (name === undefined || HELP_FLAGS.has(name) || name === "help") {
    const root = await rootCommand();
    return { stdout: `${await renderUsage(root)}\n`, exitCode: name === undefined ? 2 : 0 };
  }
  if (VERSION_FLAGS.has(name)) return { stdout: `${CLI_VERSION}\n`, exitCode: 0 };
  const load = commands[name];
  if (!load) throw new BerthError("USAGE", `unknown command ${JSON.stringify(name)}; run \`berth --help\` for the list.`);
  const command = await load();
  if (rest.some((arg) => HELP_FLAGS.has(arg))) {
    return { stdout: `${await renderUsage(command, await rootCommand())}\n`, exitCode: 0 };
  }
  const defs = ((typeof command.args === "function" ? await command.args() : await command.args) ?? {}) as ArgsDef;
  if (!SELF_PARSING_COMMANDS.has(name)) checkArgs(rest, defs, name);
  const { result } = await runCommand(command, { rawArgs: rest });
  if (isInteractiveExit(result)) return { stdout: "", exitCode: result.exitCode };
  const warnings = takeWarnings();
  for (const warning of warnings) logger.warn(warning);
  const body = { ...(result as object), ...(warnings.length > 0 ? { warnings } : {}) };
  return { stdout: renderJson(body), exitCode: 0 };
}

export async function runCli(argv: string[]): Promise<number> {
  let output: { stdout: string; exitCode: number };
  try {
    output = await execute(argv);
  } catch (error) {
    for (const warning of takeWarnings()) logger.warn(warning);
    const object = errorObject(error);
    if (object.error.code === "INTERNAL") logger.error(error);
    else logger.error(object.error.message);
    output = { stdout: renderJson(object), exitCode: exitCodeFor(error) };
  }
  if (output.stdout) await Bun.write(Bun.stdout, output.stdout);
  return output.exitCode;
}
