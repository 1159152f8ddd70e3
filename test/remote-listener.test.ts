/**
 * A notification listener that throws is its caller's bug: against a real
 * sshd and the far side's real app-server, it is reported and the connection
 * (its ssh) goes on — before, the throw ended the reading loop, which killed
 * ssh, and a follower reconnected into the same throw again.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { connect, type Closed, type Connection } from "../src/client/connection.ts";
import { followProcess, type RemoteProcess } from "../src/client/follow.ts";
import { isAlive } from "./helpers/berth.ts";
import { remoteClientEnv, remoteHosts } from "./helpers/remote-host.ts";
import { sshdUnavailable } from "./helpers/sshd.ts";

const reason = sshdUnavailable();
if (reason) console.warn(`SKIPPING remote listener tests: ${reason}`);
/** A few lines from the far side take well under a second; generous under load. */
const EXIT_WAIT_MS = 30_000;

const remote = remoteHosts();
afterEach(() => remote.cleanUp());

const LINES = ["line-1", "line-2", "line-3", "line-4", "line-5"];
/** Five lines, a little apart (several notifications), then exit 4. */
const FIVE_LINES = ["sh", "-c", `for l in ${LINES.join(" ")}; do echo $l; sleep 0.05; done; exit 4`];

/** The process/exited notification, or the connection's end: whichever comes first (a dead ssh fails at once, not at the test's timeout). */
function exitedOrClosed(conn: Connection): Promise<{ exited?: any; closed?: Closed }> {
  return Promise.race([
    new Promise<{ exited: any }>((resolve) => conn.on("process/exited", (exited) => resolve({ exited }))),
    conn.closed.then((closed) => ({ closed })),
    Bun.sleep(EXIT_WAIT_MS).then(() => ({})),
  ]);
}

describe.skipIf(Boolean(reason))("a listener that throws never ends the connection", () => {
  test("thrown and rejected errors go to onListenerError; the ssh, the calls and the other listeners go on", async () => {
    const host = await remote.newHost();
    const conn = await connect(host.alias, { env: remoteClientEnv(host) });
    remote.track(conn); // a failed test leaves no ssh behind
    const ssh = conn.sshPid;
    const errors: string[] = [];
    conn.onListenerError((error, method) => errors.push(`${method}: ${(error as Error).message}`));
    conn.on("process/output", () => {
      throw new Error("a caller's bug");
    });
    conn.on("process/output", async () => {
      throw new Error("a caller's async bug");
    });
    conn.on("*", () => {
      throw new Error("a catch-all's bug");
    });
    let output = "";
    conn.on("process/output", (p) => void (output += Buffer.from(p.data, "base64").toString()));
    const ended = exitedOrClosed(conn);
    await conn.call("process/spawn", { argv: FIVE_LINES });
    const { exited, closed } = await ended;
    expect({ closed, exitCode: exited?.exitCode }).toEqual({ closed: undefined, exitCode: 4 });
    expect(output).toBe(LINES.map((line) => `${line}\n`).join(""));
    expect(conn.isClosed).toBe(false);
    expect(isAlive(ssh)).toBe(true);
    expect(errors).toContain("process/output: a caller's bug");
    expect(errors).toContain("process/output: a caller's async bug");
    expect(errors).toContain("process/exited: a catch-all's bug");
    expect((await conn.call<{ home: string }>("system/info", {})).home).toBe(host.farHome);
    expect((await conn.close()).code).toBe(0);
  }, 60_000);

  test("without a handler the first error is one line on stderr, later ones are not repeated", async () => {
    const host = await remote.newHost();
    const conn = await connect(host.alias, { env: remoteClientEnv(host) });
    remote.track(conn); // a failed test leaves no ssh behind
    const printed: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array) => printed.push(String(chunk)) > 0) as typeof process.stderr.write;
    try {
      let thrown = 0;
      conn.on("process/output", () => {
        thrown += 1;
        throw new Error(`bug number ${thrown}`);
      });
      // Two processes, one after the other: at least two notifications, however the output is read.
      for (const argv of [FIVE_LINES, ["sh", "-c", "echo once more; exit 4"]]) {
        const ended = exitedOrClosed(conn);
        await conn.call("process/spawn", { argv });
        const { exited, closed } = await ended;
        expect({ closed, exitCode: exited?.exitCode }).toEqual({ closed: undefined, exitCode: 4 });
      }
      expect(thrown).toBeGreaterThan(1);
    } finally {
      process.stderr.write = write;
    }
    const lines = printed.filter((text) => text.includes("a listener of"));
    expect(lines).toEqual([`berth: a listener of process/output on the connection to ${host.alias} failed: bug number 1; the connection goes on (later listener errors are not reported)\n`]);
    expect(conn.isClosed).toBe(false);
    expect((await conn.close()).code).toBe(0);
  }, 60_000);

  test("a follower whose output consumer throws keeps its connection: no reconnect, every byte once, the exit code", async () => {
    const host = await remote.newHost();
    const notices: string[] = [];
    let output = "";
    let calls = 0;
    const follower = remote.trackFollower(
      await followProcess({
        open: () => connect(host.alias, { env: remoteClientEnv(host) }),
        first: async (conn) => (await conn.call<{ process: RemoteProcess }>("process/spawn", { argv: FIVE_LINES })).process,
        onOutput: (_stream, data) => {
          calls += 1;
          output += new TextDecoder().decode(data);
          if (calls === 1) throw new Error("the consumer's bug");
        },
        onNotice: (text) => notices.push(text),
      }),
    );
    const ssh = follower.connection.sshPid;
    const outcome = await Promise.race([follower.done, Bun.sleep(EXIT_WAIT_MS).then(() => ({ kind: "timeout" }))]);
    expect(outcome).toEqual({ kind: "exited", exitCode: 4, signal: null });
    expect(notices.filter((text) => text.includes("reconnect"))).toEqual([]);
    expect(follower.connection.sshPid).toBe(ssh);
    expect(output).toBe(LINES.map((line) => `${line}\n`).join(""));
  }, 60_000);
});
