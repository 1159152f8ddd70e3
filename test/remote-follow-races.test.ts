/**
 * A follower (src/client/follow.ts) that ends while a reconnect is under way,
 * against a real sshd on loopback and the far side's real app-server: the
 * connection that comes up after the end must not be left open and attached.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { connect } from "../src/client/connection.ts";
import { followProcess, type RemoteProcess } from "../src/client/follow.ts";
import { eventually } from "./helpers/berth.ts";
import { remoteClientEnv, remoteHosts, withConnection } from "./helpers/remote-host.ts";
import { connectSshUnder, sshdUnavailable } from "./helpers/sshd.ts";

const WAIT_MS = 20_000;
const reason = sshdUnavailable();
if (reason) console.warn(`SKIPPING follower race tests: ${reason}`);

const remote = remoteHosts();
afterEach(() => remote.cleanUp());

describe.skipIf(Boolean(reason))("a follower that ends during a reconnect", () => {
  test("detached while the reconnect's ssh hangs: once that ssh gets through, its connection is closed, not attached", async () => {
    const host = await remote.newHost();
    const spawned = await withConnection(host, (conn) => conn.call<{ process: RemoteProcess }>("process/spawn", { name: "idle", argv: ["sleep", "1000"] }));
    const processId = spawned.process.processId;
    const notices: string[] = [];
    const follower = remote.trackFollower(
      await followProcess({
        open: () => connect(host.alias, { env: remoteClientEnv(host) }),
        first: async (conn) => (await conn.call<{ process: RemoteProcess }>("process/attach", { processId })).process,
        onOutput: () => undefined,
        onNotice: (text) => void notices.push(text),
      }),
    );
    let sshdStopped = false;
    try {
      // sshd frozen: the reconnect's ssh hangs at the banner (well inside its 10 s ConnectTimeout) until it goes on.
      process.kill(host.sshdPid, "SIGSTOP");
      sshdStopped = true;
      process.kill(follower.connection.sshPid, "SIGKILL");
      expect(await eventually(() => notices.some((n) => n.includes("reconnecting")), WAIT_MS)).toBe(true);
      expect(await eventually(() => connectSshUnder(process.pid) !== undefined, WAIT_MS)).toBe(true);
      await follower.detach();
      expect((await follower.done).kind).toBe("detached");
      process.kill(host.sshdPid, "SIGCONT");
      sshdStopped = false;
      // Before, that ssh connected, attached again ("reconnected") and stayed, with the follower done.
      expect(await eventually(() => connectSshUnder(process.pid) === undefined, WAIT_MS)).toBe(true);
      expect(notices.filter((n) => n.includes("reconnected"))).toEqual([]);
      const listed = await withConnection(host, (conn) => conn.call<{ processes: Array<RemoteProcess & { attached: number }> }>("process/list", {}));
      expect(listed.processes.find((p) => p.processId === processId)?.attached).toBe(0);
    } finally {
      if (sshdStopped) process.kill(host.sshdPid, "SIGCONT");
      await withConnection(host, (conn) => conn.call("process/signal", { processId, signal: "SIGKILL" }));
    }
  }, 120_000);
});
