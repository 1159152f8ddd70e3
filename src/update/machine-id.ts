/**
 * The machine id of a BERTH_HOME: random, created once (0600, temp file
 * linked into place so two racing creators agree on one), used only to place
 * this machine in a phased rollout.
 */
import { closeSync, fsyncSync, linkSync, openSync, constants, readSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { BerthError, errnoCode } from "../errors.ts";
import { FILE_MODE, createTemp } from "../platform/fs.ts";

const ID_PATTERN = /^[0-9a-f]{32}$/;

export function machineIdPath(daemonDir: string): string {
  return join(daemonDir, "machine-id");
}

function readId(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw new BerthError("STATE_CORRUPT", `cannot read the machine id ${path}: ${(error as Error).message}; remove it and retry.`);
  }
  try {
    const buffer = Buffer.alloc(64);
    const text = buffer.subarray(0, readSync(fd, buffer, 0, buffer.length, 0)).toString("utf8").trim();
    if (!ID_PATTERN.test(text)) throw new BerthError("STATE_CORRUPT", `${path} is not a machine id (32 hex digits); remove it and retry.`);
    return text;
  } finally {
    closeSync(fd);
  }
}

/** This BERTH_HOME's machine id, created on first use. `daemonDir` must already exist. */
export function machineId(daemonDir: string): string {
  const path = machineIdPath(daemonDir);
  const existing = readId(path);
  if (existing) return existing;
  const id = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
  const { temp, value: fd } = createTemp(path, (name) => openSync(name, "wx", FILE_MODE));
  try {
    writeSync(fd, `${id}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temp, path);
  } catch (error) {
    if (errnoCode(error) !== "EEXIST") throw error;
  } finally {
    rmSync(temp, { force: true });
  }
  return readId(path) ?? id;
}
