import { createConsola } from "consola";
import { BerthError, describeError } from "./errors.ts";

/** Human output: always stderr, so stdout carries exactly one JSON object. */
export const logger = createConsola({ stdout: process.stderr, stderr: process.stderr });

export type ErrorObject = { status: "error"; error: { code: string; message: string } };

/** Exit codes: 0 success, 1 failure, 2 usage. */
export function exitCodeFor(error: unknown): number {
  return error instanceof BerthError && error.code === "USAGE" ? 2 : 1;
}

export function errorObject(error: unknown): ErrorObject {
  if (error instanceof BerthError) return { status: "error", error: { code: error.code, message: error.message } };
  return { status: "error", error: { code: "INTERNAL", message: `internal error: ${describeError(error)}` } };
}

/** One line of JSON, keys in insertion order, `undefined` fields dropped. */
export function renderJson(value: object): string {
  return `${JSON.stringify(value)}\n`;
}
