import type { ArgsDef, CommandDef } from "citty";

/**
 * citty's `defineCommand` (the identity, typed), so that loading a command does
 * not load citty: its module imports node:util (parseArgs), about 0.15× the
 * floor in a compiled binary, which a command given no arguments never needs
 * (see `runParsed` in cli.ts).
 */
export function defineCommand<const T extends ArgsDef = ArgsDef>(def: CommandDef<T>): CommandDef<T> {
  return def;
}

export const remoteControlArgs = {
  "remote-control": { type: "boolean", description: "Also serve the API over TCP behind a bearer token" },
} as const satisfies ArgsDef;

/** `--help` that teaches: what it does, one example, the environment it reads, and what its JSON looks like. */
export function describe(parts: { summary: string; example: string; env: string[]; output: string }): string {
  return `${parts.summary}\n\nExample: ${parts.example}\nEnvironment: ${parts.env.join(", ")}\nOutput (one JSON line on stdout): ${parts.output}\n`;
}

/**
 * What an interactive command (`remote shell|run|attach`) returns once
 * it has used the terminal itself: cli.ts then prints nothing on stdout (the
 * spec: JSON only on failure to start) and exits with `exitCode`.
 */
export type InteractiveExit = { interactiveExit: true; exitCode: number };

export function interactiveExit(exitCode: number): InteractiveExit {
  return { interactiveExit: true, exitCode };
}

export function isInteractiveExit(value: unknown): value is InteractiveExit {
  return typeof value === "object" && value !== null && (value as InteractiveExit).interactiveExit === true;
}

/** Commands that parse their own arguments (`remote HOST sub …` has positionals citty cannot express). */
export const SELF_PARSING_COMMANDS = new Set(["remote"]);
