import { createConsola, type ConsolaInstance, type ConsolaReporter } from "consola/core";
import { BerthError, describeError, storageError } from "./errors.ts";
import { writeOutput } from "./stdio.ts";

export { writeOutput };

/**
 * consola's core with a plain stderr reporter: its default entry loads tty and
 * util helpers that cost ~17 ms and ~14 MB in every command and daemon
 * (measured in bench/), for colours no SSH client reads.
 */
const stderrReporter: ConsolaReporter = {
  log(entry) {
    const label = entry.type === "info" || entry.type === "log" ? "" : `${entry.type}: `;
    const text = entry.args.map((arg) => (arg instanceof Error ? (arg.stack ?? arg.message) : String(arg))).join(" ");
    writeOutput(2, `${label}${text}\n`);
  },
};

let consola: ConsolaInstance | undefined;
/** Made on first use: creating it costs ~0.06× the floor, which a command that logs nothing need not pay. */
const instance = () => (consola ??= createConsola({ reporters: [stderrReporter] }));

/** Human output: always stderr, so stdout carries exactly one JSON object. */
export const logger = {
  info: (message: unknown, ...args: unknown[]) => instance().info(message, ...args),
  warn: (message: unknown, ...args: unknown[]) => instance().warn(message, ...args),
  error: (message: unknown, ...args: unknown[]) => instance().error(message, ...args),
};

export type ErrorObject = { status: "error"; error: { code: string; message: string } };

/** Exit codes: 0 success, 1 failure, 2 usage. */
export function exitCodeFor(error: unknown): number {
  return error instanceof BerthError && error.code === "USAGE" ? 2 : 1;
}

export function errorObject(error: unknown): ErrorObject {
  if (error instanceof BerthError) return { status: "error", error: { code: error.code, message: error.message } };
  const storage = storageError(error);
  if (storage) return { status: "error", error: { code: storage.code, message: storage.message } };
  return { status: "error", error: { code: "INTERNAL", message: `internal error: ${describeError(error)}` } };
}

/** One line of JSON, keys in insertion order, `undefined` fields dropped. */
export function renderJson(value: object): string {
  return `${JSON.stringify(value)}\n`;
}
