/**
 * `berth connect` whose stdin is a terminal (SPEC "Connecting": each stdin line becomes one frame, each stdout
 * line is one server frame). A client that asks ssh for a pty (`ssh -t host berth connect`; SSH libraries that
 * request one by default), or a person at a terminal, got the terminal's line discipline in the way: every
 * request echoed back onto stdout, read by the client as a message from the server, and requests over 4 KiB
 * cut at the canonical-mode line limit (a parse error, the request lost). Real sshd, real pseudo-terminals.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { constants, closeSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventually, homesPerTest, installRelease, isAlive, killProcessesOf, MAIN, BUN, type TestHome } from "./helpers/berth.ts";
import { PtyProcess } from "./helpers/pty.ts";
import { sshdUnavailable, startSshd, type SshHost } from "./helpers/sshd.ts";

const TEST_TIMEOUT_MS = 90_000;
const WAIT_MS = 30_000;
/** Longer than the terminal's canonical line limit (4095 bytes). */
const TITLE_BYTES = 6_000;
const reason = sshdUnavailable();
if (reason) console.warn(`SKIPPING connect-over-a-pty tests: ${reason}`);

const newHome = homesPerTest(afterEach);
const hosts: SshHost[] = [];
const ptys: PtyProcess[] = [];
afterEach(async () => {
  for (const pty of ptys.splice(0)) pty.kill();
  for (const host of hosts.splice(0)) {
    killProcessesOf(host.farBerthHome);
    await host.stop();
    killProcessesOf(host.farBerthHome);
  }
});

/** An initialize request longer than a terminal line may be. */
const bigRequest = (id: number) => JSON.stringify({ jsonrpc: "2.0", id, method: "initialize", params: { clientInfo: { name: "pty-client", version: "1", title: "t".repeat(TITLE_BYTES) } } });

/** Lines after the `connected` line, each parsed (a line that is not JSON fails the test with its text). */
function messagesAfterConnected(output: string): Array<Record<string, unknown>> {
  const lines = output.split("\n").map((line) => line.replace(/\r$/, ""));
  const at = lines.findIndex((line) => line.includes('"status":"connected"'));
  expect(at).toBeGreaterThanOrEqual(0);
  return lines.slice(at + 1).filter((line) => line !== "").map((line) => JSON.parse(line));
}

describe.skipIf(Boolean(reason))("connect over `ssh -tt` (a pty on the far side)", () => {
  test(
    "a request longer than a terminal line is answered, and stdout carries only the server's messages (no echo)",
    async () => {
      const host = await startSshd();
      hosts.push(host);
      installRelease(host.farBerthHome);
      const [ssh, ...sshArgs] = host.sshCommand.split(" ");
      const client = Bun.spawn([ssh as string, ...sshArgs, "-tt", host.alias, `${host.farBerthHome}/packages/standalone/current/berth connect`], {
        stdin: "pipe",
        stdout: "pipe",
        stderr: "pipe",
      });
      let output = "";
      const reading = (async () => {
        for await (const chunk of client.stdout) output += new TextDecoder().decode(chunk);
      })();
      try {
        expect(await eventually(() => output.includes('"status":"connected"'), WAIT_MS)).toBe(true);
        client.stdin.write(`${bigRequest(1)}\n`);
        await client.stdin.flush();
        expect(await eventually(() => /"id":1,"(result|error)"/.test(output), WAIT_MS)).toBe(true);
        const messages = messagesAfterConnected(output);
        expect(messages.some((m) => "method" in m)).toBe(false);
        expect(messages.find((m) => m.id === 1)).toMatchObject({ result: { serverInfo: { name: "berth" } } });
      } finally {
        client.kill("SIGKILL");
        await reading.catch(() => {});
      }
    },
    TEST_TIMEOUT_MS,
  );
});

/** `berth connect` on a fresh pseudo-terminal, connected; `settings()` is `stty -a` of that terminal. */
async function connectAtTerminal(): Promise<{ home: TestHome; pty: PtyProcess; settings(): string }> {
  const home = newHome();
  const ttyFile = join(home.env.HOME as string, "tty");
  const pty = new PtyProcess(["/bin/sh", "-c", `tty > '${ttyFile}'; exec '${BUN}' '${MAIN}' connect`], home.env);
  ptys.push(pty);
  expect(await pty.waitFor('"status":"connected"', WAIT_MS)).toBe(true);
  const tty = readFileSync(ttyFile, "utf8").trim();
  return { home, pty, settings: () => Bun.spawnSync(["sh", "-c", `stty -a < '${tty}'`]).stdout.toString() };
}

describe("connect at a person's terminal", () => {
  test(
    "no echo of what is typed, long lines whole; Ctrl-C ends it and the terminal is as it was (echo, line editing)",
    async () => {
      const { pty, settings } = await connectAtTerminal();
      pty.type(`${bigRequest(7)}\n`);
      expect(await pty.waitFor(/"id":7,"(result|error)"/, WAIT_MS)).toBe(true);
      const messages = messagesAfterConnected(pty.output);
      expect(messages.some((m) => "method" in m)).toBe(false);
      expect(messages.find((m) => m.id === 7)).toMatchObject({ result: { serverInfo: { name: "berth" } } });

      pty.type("\x03");
      // Ended by the signal, as without a terminal to put back (exitCode stays null for a death by signal).
      expect(await eventually(() => pty.proc.signalCode !== null, WAIT_MS)).toBe(true);
      expect(pty.proc.signalCode).toBe("SIGINT");
      expect(settings()).toMatch(/(^|\s)echo(\s|$)/);
      expect(settings()).toMatch(/(^|\s)icanon(\s|$)/);
      expect(settings()).toMatch(/(^|\s)opost(\s|$)/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "Ctrl-D still ends it as at any terminal: what was typed before is answered, exit 0, and the terminal is as it was",
    async () => {
      const { pty, settings } = await connectAtTerminal();
      pty.type(`${bigRequest(9)}\n\x04`);
      expect(await pty.exited()).toBe(0);
      expect(messagesAfterConnected(pty.output).find((m) => m.id === 9)).toMatchObject({ result: { serverInfo: { name: "berth" } } });
      expect(settings()).toMatch(/(^|\s)echo(\s|$)/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the server going away (exit 75) puts the terminal back too",
    async () => {
      const { home, pty, settings } = await connectAtTerminal();
      expect(settings()).toMatch(/(^|\s)-echo(\s|$)/);
      expect((await home.run(["stop"])).json.status).toBe("stopped");
      expect(await pty.exited()).toBe(75);
      expect(settings()).toMatch(/(^|\s)echo(\s|$)/);
      expect(settings()).toMatch(/(^|\s)icanon(\s|$)/);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("connect whose client closed stdin and never reads stdout", () => {
  test(
    "it no longer waits for ever to hand over the replies: it gives up after the drain allowance, says so, and exits",
    async () => {
      const home = newHome();
      expect((await home.run(["start"])).json.status).toBe("started");
      // A reply far larger than a pipe holds (64 KiB), to a reader that never reads: stdout is a FIFO held open here.
      const file = home.path("reply.bin");
      writeFileSync(file, Buffer.alloc(150 * 1024, 7));
      const requests = [
        { jsonrpc: "2.0", id: 1, method: "initialize", params: { clientInfo: { name: "never-reads", version: "1" } } },
        { jsonrpc: "2.0", method: "initialized" },
        { jsonrpc: "2.0", id: 2, method: "fs/readFile", params: { path: file } },
      ];
      writeFileSync(home.path("requests"), `${requests.map((r) => JSON.stringify(r)).join("\n")}\n`);
      const fifo = home.path("stdout.fifo");
      expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
      const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        const bridge = Bun.spawn(["sh", "-c", `exec '${BUN}' '${MAIN}' connect < '${home.path("requests")}' > '${fifo}'`], { env: home.env, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
        const stderr = new Response(bridge.stderr).text();
        // 5 s for replies at EOF, then 10 s and the backlog at 16 KiB/s: well within this.
        const code = await Promise.race([bridge.exited, Bun.sleep(WAIT_MS * 2).then(() => "still running")]);
        if (code === "still running") bridge.kill("SIGKILL");
        expect(code).toBe(0);
        expect(isAlive(bridge.pid)).toBe(false);
        expect(await stderr).toContain("stdout took nothing");
        expect((await home.run(["status"])).json.appServer).toMatchObject({ state: "running", answering: true });
      } finally {
        closeSync(reader);
      }
    },
    TEST_TIMEOUT_MS,
  );
});
