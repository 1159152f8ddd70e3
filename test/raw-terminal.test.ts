/**
 * src/client/terminal.ts on a real pseudo-terminal: a terminating signal always reaches the program's handler,
 * even when the terminal it would put back cannot be set any more (a hangup).
 */
import { afterEach, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BUN, eventually, tempDirsPerTest } from "./helpers/berth.ts";
import { PtyProcess } from "./helpers/pty.ts";

const FIXTURE = join(import.meta.dir, "fixtures", "hung-up-terminal.ts");
/** The handler runs at once; this is for a loaded machine. */
const HANDLED_WAIT_MS = 15_000;
const ptys: PtyProcess[] = [];
afterEach(() => {
  for (const pty of ptys.splice(0)) pty.kill();
});
const tempDir = tempDirsPerTest(afterEach, "berth-raw-terminal-");

test("SIGHUP while the terminal cannot be set back (EIO after a hangup): the handler still runs and the program ends", async () => {
  const marker = join(tempDir(), "signal");
  const pty = new PtyProcess(["/bin/sh", "-c", `exec '${BUN}' '${FIXTURE}' '${marker}'`], { PATH: process.env.PATH ?? "/usr/bin:/bin" });
  ptys.push(pty);
  expect(await pty.waitFor("raw now")).toBe(true);
  process.kill(pty.pid, "SIGHUP");
  // Before: restoring the terminal threw first, so `remote attach` never detached and, its handlers gone, ran on
  // without a terminal (found orphaned after a test, 12 min later).
  expect(await eventually(() => existsSync(marker), HANDLED_WAIT_MS)).toBe(true);
  expect(readFileSync(marker, "utf8")).toBe("SIGHUP");
  expect(await pty.exited(HANDLED_WAIT_MS)).toBe(0);
}, 60_000);
