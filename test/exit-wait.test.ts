/**
 * Waiting on a process's exit through a pidfd (src/daemon/exit-wait.ts): real
 * processes, real signals; outcomes only, never times.
 */
import { describe, expect, test } from "bun:test";
import { closeSync } from "node:fs";
import { sleepUntilExit } from "../src/daemon/exit-wait.ts";
import { openPidfd } from "../src/platform/ffi.ts";
import { processIdentity } from "../src/platform/process.ts";

const LONG_WAIT_MS = 20_000;

function sleeper() {
  const child = Bun.spawn({ cmd: ["sleep", "60"], stdio: ["ignore", "ignore", "ignore"] });
  const identity = processIdentity(child.pid);
  if (identity === undefined) throw new Error("sleep exited at once");
  return { child, record: { pid: child.pid, processStartTime: identity } };
}

describe.if(process.platform === "linux")("sleepUntilExit on Linux", () => {
  test("this kernel gives pidfds (otherwise stop falls back to polling)", () => {
    const { child } = sleeper();
    try {
      const fd = openPidfd(child.pid);
      expect(fd).toBeGreaterThan(2);
      closeSync(fd!);
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("wakes with 'exited' when the process is killed while it waits", async () => {
    const { child, record } = sleeper();
    const waiting = sleepUntilExit(record, LONG_WAIT_MS);
    // The wait has polled one slice already (it runs synchronously up to its first yield) and polls again.
    child.kill("SIGTERM");
    expect(await waiting).toBe("exited");
    await child.exited;
  }, 30_000);

  test("'timeout' while the process lives on", async () => {
    const { child, record } = sleeper();
    try {
      expect(await sleepUntilExit(record, 100)).toBe("timeout");
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
  });

  test("'exited' at once for a process that is gone, or a pid now naming another process", async () => {
    const { child, record } = sleeper();
    child.kill("SIGKILL");
    await child.exited;
    expect(await sleepUntilExit(record, LONG_WAIT_MS)).toBe("exited");
    const other = sleeper();
    try {
      // Same pid, different recorded start time: not our process, never waited on.
      expect(await sleepUntilExit({ pid: other.record.pid, processStartTime: "0/0" }, LONG_WAIT_MS)).toBe("exited");
    } finally {
      other.child.kill("SIGKILL");
      await other.child.exited;
    }
  }, 30_000);
});
