/**
 * Input through `berth remote` arrives exactly once when the connection drops
 * after the host applied a write and before its answer got back: against a
 * real sshd on loopback and the far side's real app-server. The far side's
 * `berth connect` (the bridge between sshd and the app-server) is frozen, the
 * write is seen waiting in its stdin, the client's ssh is killed (a dropped
 * network), then the bridge goes on: it hands the write to the app-server,
 * which applies it, and the answer has nowhere to go. The client reconnects
 * and sends the same chunk again: the process must read it once.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { dlopen, FFIType, ptr } from "bun:ffi";
import { closeSync, constants, existsSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../src/client/connection.ts";
import { followProcess, type RemoteProcess } from "../src/client/follow.ts";
import { eventually } from "./helpers/berth.ts";
import { remoteClientEnv, remoteHosts } from "./helpers/remote-host.ts";
import { connectSshUnder, descendantsOf, sshdUnavailable } from "./helpers/sshd.ts";

/** Each step crosses ssh, a bridge process and a pty: generous, under load too. */
const STEP_WAIT_MS = 30_000;
/** Linux ioctl: bytes waiting to be read in a pipe. */
const FIONREAD = 0x541b;
const reason = sshdUnavailable() ?? (process.platform === "linux" ? undefined : "FIONREAD on /proc/<pid>/fd is Linux only");
if (reason) console.warn(`SKIPPING remote input exactly-once tests: ${reason}`);

const remote = remoteHosts();
afterEach(() => remote.cleanUp());

const libc = () => dlopen("libc.so.6", { ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 } }).symbols;

/** Bytes waiting unread in the pipe that is `pid`'s stdin (opened anew through /proc: reading nothing from it). */
function unreadStdin(pid: number): number {
  const fd = openSync(`/proc/${pid}/fd/0`, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const count = new Int32Array(1);
    return libc().ioctl(fd, FIONREAD, ptr(count)) === 0 ? (count[0] as number) : -1;
  } finally {
    closeSync(fd);
  }
}

/** The far side's `berth connect` processes (sshd's descendants running main.ts connect). */
function farBridges(sshdPid: number): number[] {
  return descendantsOf(sshdPid).filter((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      return argv.some((word) => word.endsWith("main.ts")) && argv.includes("connect");
    } catch {
      return false;
    }
  });
}

const fileText = (file: string) => (existsSync(file) ? readFileSync(file, "utf8") : "");

describe.skipIf(Boolean(reason))("a write whose answer was lost with its connection", () => {
  test("is sent again after the reconnect and reaches the process once", async () => {
    const host = await remote.newHost();
    const file = join(host.farTmp, "once");
    let output = "";
    const follower = remote.trackFollower(
      await followProcess({
        open: () => connect(host.alias, { env: remoteClientEnv(host) }),
        first: async (conn) =>
          (await conn.call<{ process: RemoteProcess }>("process/spawn", { name: "once", terminal: { cols: 80, rows: 24 }, argv: ["sh", "-c", `stty raw -echo; echo ready; exec cat > '${file}'`] }))
            .process,
        onOutput: (_stream, data) => void (output += new TextDecoder().decode(data)),
        onNotice: (text) => void (output += `\n${text}\n`),
      }),
    );
    expect(await eventually(() => output.includes("ready"), STEP_WAIT_MS)).toBe(true);
    const bridges = farBridges(host.sshdPid);
    expect(bridges.length).toBe(1);
    const bridge = bridges[0] as number;
    const stopped = new Set<number>();
    const freeze = (pid: number) => {
      process.kill(pid, "SIGSTOP");
      stopped.add(pid);
    };
    const thaw = (pid: number) => {
      process.kill(pid, "SIGCONT");
      stopped.delete(pid);
    };
    try {
      // The bridge frozen with its stdin empty; sshd's listener frozen too, so the reconnect waits for the test.
      freeze(bridge);
      freeze(host.sshdPid);
      expect(unreadStdin(bridge)).toBe(0);
      const first = "y\nrm -rf build\n";
      expect(follower.write(new TextEncoder().encode(first))).toBeUndefined();
      // The whole request (its base64 alone is 20 bytes) waits in the frozen bridge's stdin.
      expect(await eventually(() => unreadStdin(bridge) > 60, STEP_WAIT_MS)).toBe(true);
      const ssh = connectSshUnder(process.pid);
      expect(ssh).toBeDefined();
      const mark = output.length;
      process.kill(ssh as number, "SIGKILL");
      expect(await eventually(() => output.slice(mark).includes("reconnecting"), STEP_WAIT_MS)).toBe(true);
      // The bridge goes on: the app-server applies the write; its answer has no connection to go back on.
      thaw(bridge);
      expect(await eventually(() => fileText(file) === first, STEP_WAIT_MS)).toBe(true);
      thaw(host.sshdPid);
      expect(await eventually(() => output.slice(mark).includes("reconnected"), STEP_WAIT_MS)).toBe(true);
      // Sent after the chunk that was in flight: once it arrives, the resend was answered before it.
      follower.write(new TextEncoder().encode("after\n"));
      expect(await eventually(() => fileText(file).endsWith("after\n"), STEP_WAIT_MS)).toBe(true);
      expect(fileText(file)).toBe(`${first}after\n`);
      expect(output).not.toContain("not delivered");
    } finally {
      for (const pid of stopped) process.kill(pid, "SIGCONT");
    }
  }, 120_000);
});
