// `berth connect` as a real subprocess with pipes against a real app-server:
// shell noise before the connected line, sessions that survive the bridge,
// re-attach from offsets, and the exit codes 0 / 65 / 75.
import { describe, expect, test } from "bun:test";
import { BUN, MAIN, eventually, isAlive } from "./helpers/berth.ts";
import { CONNECT_WAIT_MS, connectFixtures } from "./helpers/connect.ts";

const TEST_TIMEOUT_MS = 90_000;
const { home: newHome, connect } = connectFixtures("berth-connect-");

describe("berth connect", () => {
  test("noise is skipped; a process outlives the bridge; a new bridge re-attaches from an offset with nothing lost or repeated", async () => {
    const home = newHome();
    const first = connect(home, [], "echo 'Welcome to the host!'; echo '{\"not\":\"it\"}'");
    const line = { ...(await first.waitConnected()) };
    const serverPid = line.pid;
    expect(first.noise).toEqual(["Welcome to the host!", '{"not":"it"}']);
    expect(line).toMatchObject({ status: "connected", protocol: 1, pid: expect.any(Number), appServerVersion: "0.1.0", cliVersion: "0.1.0", socketPath: home.path("daemon", "app-server.sock") });
    expect((await first.initialize()).pid).toBe(serverPid);
    const { process: p } = await first.call("process/spawn", { argv: ["sh", "-c", "i=0; while true; do echo n$i; i=$((i+1)); sleep 0.02; done"], name: "numbers" });
    expect(await eventually(() => first.output(p.processId, "stdout").text.split("\n").length > 10, CONNECT_WAIT_MS)).toBe(true);
    first.kill();
    await first.exited;
    const seen = first.output(p.processId, "stdout");
    expect(seen.gaps).toBe(0);
    const seenBytes = Buffer.byteLength(seen.text);

    const second = connect(home);
    await second.waitConnected();
    await second.initialize();
    const { processes } = await second.call("process/list");
    expect(processes).toEqual([expect.objectContaining({ processId: p.processId, name: "numbers", state: "running" })]);
    await second.call("process/attach", { processId: "numbers", since: { stdout: seenBytes } });
    expect(await eventually(() => second.output(p.processId, "stdout").text.split("\n").length > 10, CONNECT_WAIT_MS)).toBe(true);
    const rest = second.output(p.processId, "stdout");
    expect(rest.firstOffset).toBe(seenBytes);
    expect(rest.gaps).toBe(0);
    const all = (seen.text + rest.text).split("\n").filter(Boolean);
    expect(all).toEqual(all.map((_, i) => `n${i}`));
    second.proc.stdin.end();
    expect(await second.exited).toBe(0);
    expect(isAlive(p.pid)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("exit 75 when the server stops under it; exit 65 on a line over 1 MiB; exit 0 on EOF", async () => {
    const home = newHome();
    const a = connect(home);
    await a.waitConnected();
    await a.initialize();
    const stopped = await home.run(["stop"]);
    expect(stopped.json.status).toBe("stopped");
    expect(await a.exited).toBe(75);

    const b = connect(home);
    await b.waitConnected();
    b.send(`${"x".repeat(1024 * 1024 + 1)}\n`);
    expect(await b.exited).toBe(65);

    const c = connect(home);
    await c.waitConnected();
    const reply = await c.call("initialize", { clientInfo: { name: "t", version: "1" } });
    expect(reply.serverInfo.name).toBe("berth");
    c.send({ id: 99, method: "process/list", params: {} });
    c.proc.stdin.end();
    expect(await c.exited).toBe(0);
    // The reply to the request sent just before EOF still came through.
    expect(c.messages().some((m) => m.id === 99 && m.result)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("--no-start fails with NOT_RUNNING and starts nothing", async () => {
    const home = newHome();
    const bridge = connect(home, ["--no-start"]);
    expect(await bridge.exited).toBe(1);
    const out = await home.run(["status"]);
    expect(out.json.appServer.state).toBe("stopped");
    const stdout = bridge.noise.join("\n");
    expect(JSON.parse(stdout)).toMatchObject({ status: "error", error: { code: "NOT_RUNNING" } });
  }, TEST_TIMEOUT_MS);

  test("a slow stdout reader gets every line whole and every byte in order (the bridge stops reading the socket meanwhile)", async () => {
    const home = newHome();
    const proc = Bun.spawn([BUN, MAIN, "connect"], { env: home.env, stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const send = (m: object) => proc.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", ...m })}\n`);
    send({ id: 1, method: "initialize", params: { clientInfo: { name: "slow", version: "1" } } });
    send({ method: "initialized" });
    send({ id: 2, method: "process/spawn", params: { argv: ["sh", "-c", "head -c 6000000 /dev/zero"] } });
    void proc.stdin.flush();
    const decoder = new TextDecoder();
    let partial = "";
    let badLines = 0;
    let next = 0;
    let truncatedAt: number | undefined;
    let exited = false;
    for await (const chunk of proc.stdout) {
      partial += decoder.decode(chunk, { stream: true });
      const lines = partial.split("\n");
      partial = lines.pop() as string;
      for (const line of lines) {
        let m: any;
        try {
          m = JSON.parse(line);
        } catch {
          badLines++;
          continue;
        }
        if (m.method === "process/output") {
          if (m.params.offset !== next) {
            truncatedAt ??= next;
            if (m.params.truncated !== true || m.params.offset < next) badLines++;
          }
          next = m.params.offset + Buffer.from(m.params.data, "base64").length;
        }
        if (m.method === "process/exited" && !exited) {
          exited = true;
          proc.stdin.end();
        }
      }
      await Bun.sleep(5);
    }
    expect(await proc.exited).toBe(0);
    expect(badLines).toBe(0);
    expect(exited).toBe(true);
    expect(next).toBe(6_000_000);
    // A reader this slow may fall behind the 2 MiB scrollback; then the gap is marked, never silent.
    if (truncatedAt !== undefined) console.log(`slow reader: output truncated after offset ${truncatedAt}`);
  }, TEST_TIMEOUT_MS);
});
