/**
 * `berth remote HOST shell|run|attach|ps|kill|forward` end to end: a real
 * sshd on loopback, the far side's berth (from source) started by
 * `berth connect`, and the client driven through a real pseudo-terminal.
 * The ssh process is SIGKILLed mid-stream to stand for a dropped network.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../src/client/connection.ts";
import { rssMiB } from "./helpers/attack.ts";
import { argvOf, BUN, eventually, installRelease, isAlive, killProcessesOf, MAIN, parseLastJsonLine } from "./helpers/berth.ts";
import { PtyProcess } from "./helpers/pty.ts";
import { tcpSender } from "./helpers/tcp-sender.ts";
import { connectSshUnder, descendantsOf, freePort, sshdUnavailable, startSshd, type SshHost } from "./helpers/sshd.ts";

const LINES = 400;
const MIB = 1024 * 1024;

/** The most one loopback TCP connection's buffers may hold: its receive and send buffers' autotuning ceilings. */
function tcpBufferMaxBytes(): number {
  try {
    const max = (name: string) => Number(readFileSync(`/proc/sys/net/ipv4/${name}`, "utf8").trim().split(/\s+/)[2]);
    return max("tcp_rmem") + max("tcp_wmem");
  } catch {
    return 0;
  }
}

/**
 * A far-side stream more than every buffer on the way can hold: berth's, ssh's and the pipes' (well under 24 MiB)
 * and two loopback TCP connections (far side → app-server, forward → client), each up to the kernel's ceiling. A
 * fixed 24 MiB once fit (1 run in ~25) where tcp_rmem lets a receive buffer grow to 32 MiB: the far side sent it all.
 */
const HELD_BACK_STREAM_BYTES = 24 * MIB + 2 * tcpBufferMaxBytes();
/**
 * An unheld path takes such a stream whole within this (24 MiB: under 1 s), so it grows with the stream; at most
 * 10 s, well inside the 20 s a forward lets a local socket read nothing before it resets it.
 */
const HELD_BACK_WINDOW_MS = Math.min(10_000, Math.ceil((3_000 * HELD_BACK_STREAM_BYTES) / (24 * MIB)));
/** A connect through a working sshd takes a few seconds; past this the `connected` line was not recognised. */
const NOISY_CONNECT_TIMEOUT_MS = 30_000;
/** `remote run | head`: connect, a few lines, then the exit once the pipe is gone (the detach answer included). */
const PIPE_EXIT_WAIT_MS = 40_000;
const reason = sshdUnavailable();
if (reason) console.warn(`SKIPPING remote session tests: ${reason}`);

const hosts: SshHost[] = [];
const clients: { kill(): void }[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.kill();
  for (const host of hosts.splice(0)) {
    killProcessesOf(host.farBerthHome);
    await host.stop();
    killProcessesOf(host.farBerthHome);
  }
});

/** A host whose berth is installed (the source launcher) and whose login shell has a known prompt. */
async function newHost(bashrc = 'echo "noise from .bashrc before berth connect"'): Promise<SshHost> {
  const host = await startSshd({ bashrc });
  hosts.push(host);
  installRelease(host.farBerthHome);
  writeFileSync(join(host.farHome, ".bash_profile"), "PS1='far$ '\nexport PS1\n");
  return host;
}

const clientEnv = (host: SshHost): Record<string, string> => ({
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: host.dir,
  BERTH_SSH: host.sshCommand,
  NO_COLOR: "1",
  TERM: "xterm",
});

/** `berth remote …` on a pty, followed by the exit status and the terminal's mode as the shell sees it afterwards. */
function ptyClient(host: SshHost, args: string[]): PtyProcess {
  const quoted = [BUN, MAIN, "remote", host.alias, ...args].map((word) => `'${word}'`).join(" ");
  const client = new PtyProcess(["/bin/sh", "-c", `${quoted}; echo "client-exit=$?"; stty -a`], clientEnv(host));
  clients.push(client);
  return client;
}

/** A new host and `remote HOST shell [NAME]` on a pty, at its first prompt. */
async function shellAtPrompt(name?: string): Promise<{ host: SshHost; client: PtyProcess }> {
  const host = await newHost();
  const client = ptyClient(host, name ? ["shell", name] : ["shell"]);
  expect(await client.waitFor("far$ ")).toBe(true);
  return { host, client };
}

function spawnPiped(host: SshHost, args: string[]) {
  const proc = Bun.spawn([BUN, MAIN, "remote", host.alias, ...args], { env: clientEnv(host), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  clients.push({ kill: () => proc.exitCode === null && proc.kill("SIGKILL") });
  const out = { stdout: "", stderr: "" };
  const pump = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) out[key] += decoder.decode(chunk, { stream: true });
  };
  const done = Promise.all([pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr")]);
  return { proc, out, done };
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** A loopback HTTP server standing for the far side: /big sends `big`, /hash answers the sha256 of the body, anything else greets its path. */
function farServer(big: Uint8Array = new Uint8Array(0)) {
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/big") return new Response(big);
      if (path === "/hash") return new Response(sha256(new Uint8Array(await req.arrayBuffer())));
      return new Response(`far side says hi to ${path}`);
    },
  });
}

/** `remote HOST forward LOCALPORT:127.0.0.1:farPort`, once its JSON line says it listens. */
async function forwardTo(host: SshHost, farPort: number) {
  const localPort = freePort();
  const forward = spawnPiped(host, ["forward", `${localPort}:127.0.0.1:${farPort}`]);
  expect(await eventually(() => forward.out.stdout.includes("\n"), 30_000)).toBe(true);
  expect(JSON.parse(forward.out.stdout.split("\n")[0] as string)).toMatchObject({ status: "forwarding", local: `127.0.0.1:${localPort}` });
  return { forward, localPort };
}

describe.skipIf(Boolean(reason))("remote shell through a pseudo-terminal", () => {
  test("type a command and see its output; a killed ssh resumes with every line once, in order; the detach key leaves it running; exit 7 → 7", async () => {
    const { host, client } = await shellAtPrompt();
    client.type("echo hello-$((6*7))\r");
    expect(await client.waitFor("hello-42")).toBe(true);

    // Numbered lines, and the connection dies while they stream.
    const mark = client.output.length;
    client.type(`for i in $(seq 1 ${LINES}); do echo line-$i; sleep 0.01; done; echo done-$((1+1))\r`);
    if (!(await client.waitFor(/line-40\r*\n/, 20_000, mark))) throw new Error(`no line-40 in: ${JSON.stringify(client.output.slice(-2000))}`);
    const ssh = connectSshUnder(client.pid);
    expect(ssh).toBeDefined();
    process.kill(ssh as number, "SIGKILL");
    expect(client.output.slice(mark)).not.toContain("done-2"); // it really died mid-stream
    expect(await client.waitFor("done-2", 60_000, mark)).toBe(true);
    expect(client.output).toContain("reconnecting");
    expect(client.output).toContain("reconnected");
    const numbers = [...client.output.slice(mark).matchAll(/line-(\d+)\r*\n/g)].map((m) => Number(m[1]));
    expect(numbers).toEqual(Array.from({ length: LINES }, (_, i) => i + 1));

    // The detach key (Ctrl-\) leaves the shell running on the host.
    client.type("\x1c");
    expect(await client.waitFor("client-exit=0")).toBe(true);
    expect(client.output).toContain("detached");
    expect(await client.waitFor(/\bicanon\b/)).toBe(true);

    // Back to the same shell: its scrollback is there; `exit 7` ends it and the client with it.
    const again = ptyClient(host, ["shell"]);
    expect(await again.waitFor("hello-42")).toBe(true);
    const before = again.output.length;
    again.type("\rexit 7\r");
    expect(await again.waitFor("client-exit=7", 20_000, before)).toBe(true);
    // The terminal is back in cooked mode with echo.
    expect(await again.waitFor(/\bicanon\b/, 20_000, before)).toBe(true);
    expect(again.output.slice(before)).toMatch(/(^|\s)echo(\s|$)/m);
    expect(again.output.slice(before)).toMatch(/(^|\s)opost(\s|$)/m);
    // In raw mode the remote terminal's line endings pass through untouched.
    expect(client.output).toContain("hello-42\r\n");
    expect(client.output).not.toContain("hello-42\r\r\n");
  }, 180_000);

  test("keys typed while the connection is down arrive after the reconnect, once and in order", async () => {
    const { client } = await shellAtPrompt("typing");
    client.type("cat\r");
    // cat is ready once it echoes a line back.
    expect(await client.retypeUntil("ping\r", /ping\r\n.*ping/s)).toBe(true);
    const ssh = connectSshUnder(client.pid);
    expect(ssh).toBeDefined();
    const mark = client.output.length;
    process.kill(ssh as number, "SIGKILL");
    for (const key of "typed-offline-123") client.type(key);
    client.type("\r");
    expect(await client.waitFor("reconnected", 30_000, mark)).toBe(true);
    // The terminal echoes the keys, then cat prints the line: two copies, nothing else.
    expect(await client.waitFor(/typed-offline-123\r\ntyped-offline-123\r\n/, 20_000, mark)).toBe(true);
    expect(client.output.slice(mark).split("typed-offline-123").length - 1).toBe(2);
    client.type("\x04exit 0\r");
    expect(await client.waitFor("client-exit=0", 20_000, mark)).toBe(true);
  }, 120_000);

  test("the window size goes to the remote terminal at attach and on SIGWINCH", async () => {
    const { client } = await shellAtPrompt("sized");
    client.type("stty size\r");
    expect(await client.waitFor("40 120")).toBe(true);
    client.resize(90, 33);
    // SIGWINCH reaches the client; the resize is a request, so poll until the far side sees it.
    expect(await client.retypeUntil("stty size\r", "33 90")).toBe(true);
    client.type("exit 0\r");
    expect(await client.waitFor("client-exit=0")).toBe(true);
  }, 120_000);
});

describe.skipIf(Boolean(reason))("src/client as a library", () => {
  test("connect skips shell noise, calls are typed, notifications reach their listener, close ends `connect` with 0", async () => {
    const host = await newHost();
    const env = { ...clientEnv(host) };
    const conn = await connect(host.alias, { env });
    expect(conn.info).toMatchObject({ status: "connected", protocol: 1 });
    expect(conn.server).toMatchObject({ serverInfo: { name: "berth" }, berthHome: host.farBerthHome });
    const info = await conn.call<{ home: string }>("system/info", {});
    expect(info.home).toBe(host.farHome);
    const outputs: string[] = [];
    const exited = new Promise<any>((resolve) => conn.on("process/exited", resolve));
    conn.on("process/output", (p) => outputs.push(Buffer.from(p.data, "base64").toString()));
    const { process: spawned } = await conn.call("process/spawn", { argv: ["sh", "-c", "echo from-the-library; exit 3"] });
    expect(await exited).toMatchObject({ processId: spawned.processId, exitCode: 3 });
    expect(outputs.join("")).toBe("from-the-library\n");
    await expect(conn.call("process/attach", { processId: "no-such-process" })).rejects.toMatchObject({ code: -32004 });
    const closed = await conn.close();
    expect(closed.code).toBe(0);
    expect(conn.isClosed).toBe(true);
  }, 60_000);

  test("a .bashrc that prints without a final newline (a terminal-title escape): its noise opens the `connected` line, which is still found", async () => {
    const host = await newHost(`printf '\\033]0;far title\\007'; printf 'no newline here'`);
    const conn = await connect(host.alias, { env: clientEnv(host), timeoutMs: NOISY_CONNECT_TIMEOUT_MS });
    expect(conn.info).toMatchObject({ status: "connected", protocol: 1 });
    expect((await conn.call<{ home: string }>("system/info", {})).home).toBe(host.farHome);
    expect((await conn.close()).code).toBe(0);
  }, 60_000);
});

describe.skipIf(Boolean(reason))("remote run, attach, ps, kill, forward", () => {
  test("run streams; Ctrl-C detaches and says how to re-attach; attach resumes; ps lists it; kill ends it", async () => {
    const host = await newHost();
    const run = spawnPiped(host, ["run", "--name", "ticker", "--", "sh", "-c", 'i=0; while :; do i=$((i+1)); echo tick-$i; echo err-$i >&2; sleep 0.05; done']);
    expect(await eventually(() => run.out.stdout.includes("tick-3\n"), 30_000)).toBe(true);
    expect(run.out.stderr).toContain("err-1");
    run.proc.kill("SIGINT");
    expect(await run.proc.exited).toBe(0);
    await run.done;
    expect(run.out.stderr).toContain(`attach ticker`);
    expect(run.out.stdout).toBe(run.out.stdout.trimStart()); // no JSON object on success

    const ps = spawnPiped(host, ["ps"]);
    expect(await ps.proc.exited).toBe(0);
    await ps.done;
    const listed = parseLastJsonLine(ps.out.stdout);
    expect(listed.processes.find((p: any) => p.name === "ticker")?.state).toBe("running");

    const attach = spawnPiped(host, ["attach", "ticker"]);
    // The kept output from the start, then live output past where `run` stopped.
    expect(await eventually(() => attach.out.stdout.startsWith("tick-1\n") && /tick-(\d+)\n/.test(attach.out.stdout.slice(run.out.stdout.length)), 30_000)).toBe(true);
    const kill = spawnPiped(host, ["kill", "ticker", "TERM"]);
    expect(await kill.proc.exited).toBe(0);
    await kill.done;
    expect(parseLastJsonLine(kill.out.stdout)).toMatchObject({ status: "signalled", name: "ticker", signal: "SIGTERM" });
    // sh dies of SIGTERM: the attached client exits 128+15.
    expect(await attach.proc.exited).toBe(143);
    const numbers = [...attach.out.stdout.matchAll(/tick-(\d+)\n/g)].map((m) => Number(m[1]));
    expect(numbers).toEqual(Array.from({ length: numbers.length }, (_, i) => i + 1));
  }, 180_000);

  test("run piped into `head`: once the reader is gone it detaches and exits 141 (no EPIPE trace, no reconnect loop); the process keeps running", async () => {
    const host = await newHost();
    const berth = [BUN, MAIN, "remote", host.alias, "run", "--name", "piped", "--", "sh", "-c", 'i=0; while :; do i=$((i+1)); echo line-$i; done'];
    // dash has no PIPESTATUS: berth's own status goes to stderr beside its messages.
    const proc = Bun.spawn(["sh", "-c", '{ "$@"; echo "berth-exit=$?" >&2; } | head -n 3', "sh", ...berth], { env: clientEnv(host), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    // The pipeline's subshell and berth (and its ssh) are the sh's descendants: ended by pid, deepest first.
    clients.push({ kill: () => [...descendantsOf(proc.pid), proc.pid].forEach((pid) => isAlive(pid) && process.kill(pid, "SIGKILL")) });
    const output = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    expect(await eventually(() => proc.exitCode !== null, PIPE_EXIT_WAIT_MS)).toBe(true);
    const [stdout, stderr] = await output;
    expect(stdout).toBe("line-1\nline-2\nline-3\n");
    expect(stderr).toContain("berth-exit=141");
    expect(stderr).toContain("attach piped");
    expect(stderr).not.toContain("EPIPE");
    expect(stderr).not.toContain("reconnecting");
    const ps = spawnPiped(host, ["ps"]);
    expect(await ps.proc.exited).toBe(0);
    await ps.done;
    expect(parseLastJsonLine(ps.out.stdout).processes.find((p: any) => p.name === "piped")?.state).toBe("running");
  }, 60_000);

  test("a command the host cannot start is START_FAILED, one JSON object, before anything streams", async () => {
    const host = await newHost();
    const run = spawnPiped(host, ["run", "--", "/nonexistent/program"]);
    expect(await run.proc.exited).toBe(1);
    await run.done;
    expect(run.out.stdout.trim().split("\n")).toHaveLength(1);
    expect(parseLastJsonLine(run.out.stdout).error.code).toBe("START_FAILED");
    const attach = spawnPiped(host, ["attach", "nothing-here"]);
    expect(await attach.proc.exited).toBe(1);
    await attach.done;
    expect(parseLastJsonLine(attach.out.stdout).error.code).toBe("NOT_RUNNING");
  }, 60_000);

  test("forward carries a local TCP port to a loopback HTTP server on the far side over tunnel/*", async () => {
    const host = await newHost();
    // Bulk both ways too: big tunnel/write and tunnel/data frames take the client's and the server's fast paths.
    const big = randomBytes(3 * 1024 * 1024);
    const far = farServer(big);
    try {
      const { forward, localPort } = await forwardTo(host, far.port as number);
      for (const path of ["/one", "/two"]) {
        const response = await fetch(`http://127.0.0.1:${localPort}${path}`);
        expect(await response.text()).toBe(`far side says hi to ${path}`);
      }
      expect(sha256(new Uint8Array(await (await fetch(`http://127.0.0.1:${localPort}/big`)).arrayBuffer()))).toBe(sha256(big));
      expect(await (await fetch(`http://127.0.0.1:${localPort}/hash`, { method: "POST", body: big })).text()).toBe(sha256(big));
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
    } finally {
      await far.stop(true);
    }
  }, 120_000);

  test("forward survives a dropped connection: open tunnels end, it reconnects, and new local connections are carried again", async () => {
    const host = await newHost();
    const far = farServer();
    let liveClosed = false;
    try {
      const { forward, localPort } = await forwardTo(host, far.port as number);
      expect(await (await fetch(`http://127.0.0.1:${localPort}/before`)).text()).toBe("far side says hi to /before");
      // A tunnel that is open when the connection dies: a kept-alive HTTP connection, answered once (so its tunnel is
      // open: killed during its tunnel/open, the forward would rightly wait and open it again after the reconnect).
      let answered = "";
      const live = await Bun.connect({
        hostname: "127.0.0.1",
        port: localPort,
        socket: { data: (_s, d) => void (answered += d.toString()), close: () => void (liveClosed = true) },
      });
      live.write("GET /live HTTP/1.1\r\nHost: far\r\n\r\n");
      expect(await eventually(() => answered.includes("far side says hi to /live"), 30_000)).toBe(true);
      const ssh = connectSshUnder(forward.proc.pid);
      expect(ssh).toBeDefined();
      process.kill(ssh as number, "SIGKILL");
      // The far end of that tunnel is gone with the connection: the local socket is ended, not left hanging.
      expect(await eventually(() => liveClosed, 30_000)).toBe(true);
      expect(await eventually(() => forward.out.stderr.includes("reconnected"), 60_000)).toBe(true);
      expect(forward.out.stderr).toContain("reconnecting");
      expect(await (await fetch(`http://127.0.0.1:${localPort}/after`)).text()).toBe("far side says hi to /after");
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
      await forward.done;
      // Still exactly one JSON object on stdout, whatever happened on the way.
      expect(forward.out.stdout.trim().split("\n")).toHaveLength(1);
    } finally {
      await far.stop(true);
    }
  }, 120_000);

  test("a local connection made while the host is unreachable waits for the reconnect instead of being refused; what it sends meanwhile arrives whole", async () => {
    const host = await newHost();
    const big = randomBytes(3 * 1024 * 1024);
    const far = farServer();
    let sshdStopped = false;
    try {
      const { forward, localPort } = await forwardTo(host, far.port as number);
      expect(await (await fetch(`http://127.0.0.1:${localPort}/before`)).text()).toBe("far side says hi to /before");
      // sshd frozen: reconnect attempts hang at the banner until it runs again.
      process.kill(host.sshdPid, "SIGSTOP");
      sshdStopped = true;
      const ssh = connectSshUnder(forward.proc.pid);
      expect(ssh).toBeDefined();
      process.kill(ssh as number, "SIGKILL");
      const noticed = await eventually(() => forward.out.stderr.includes("reconnecting"), 30_000);
      // Failed once in ~10 runs of this file beside other suites; not reproduced in 186 more (nor in 330 kills of one
      // forward's ssh under load). The one wait without a deadline on this path, for ssh's stderr to end after its
      // exit, is now bounded (STDERR_DRAIN_MS). Should it fail again, say what forward printed, whether it still
      // runs, and what runs under it (a new ssh there: forward noticed and this test missed its line).
      const under = descendantsOf(forward.proc.pid).map((pid) => `${pid}${isAlive(pid) ? "" : " (gone)"}: ${argvOf(pid).join(" ").slice(0, 120)}`);
      expect({ noticed, stderr: forward.out.stderr, forwardExit: forward.proc.exitCode, sshGone: !isAlive(ssh as number), under }).toMatchObject({ noticed: true });
      let settled = false;
      const during = fetch(`http://127.0.0.1:${localPort}/during`).then(async (response) => await response.text()).finally(() => (settled = true));
      // More than the forward holds for a tunnel not yet open (LOCAL_PENDING_MAX_BYTES): it pauses that socket, losing nothing.
      const posted = fetch(`http://127.0.0.1:${localPort}/hash`, { method: "POST", body: big }).then(async (response) => await response.text());
      // Not refused while the host cannot be reached: still waiting a moment later.
      expect(await eventually(() => settled, 500, 50)).toBe(false);
      process.kill(host.sshdPid, "SIGCONT");
      sshdStopped = false;
      expect(await during).toBe("far side says hi to /during");
      expect(await posted).toBe(sha256(big));
      expect(forward.out.stderr).toContain("reconnected");
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
    } finally {
      if (sshdStopped) process.kill(host.sshdPid, "SIGCONT");
      await far.stop(true);
    }
  }, 120_000);

  test("SIGINT while forward reconnects to a host that does not answer: it exits at once with 0 and leaves no ssh behind", async () => {
    const host = await newHost();
    let sshdStopped = false;
    try {
      const { forward } = await forwardTo(host, 9);
      process.kill(host.sshdPid, "SIGSTOP");
      sshdStopped = true;
      const first = connectSshUnder(forward.proc.pid) as number;
      process.kill(first, "SIGKILL");
      // The reconnect's ssh, hanging at the frozen sshd's banner.
      let ssh: number | undefined;
      expect(await eventually(() => (ssh = connectSshUnder(forward.proc.pid)) !== undefined && ssh !== first, 30_000)).toBe(true);
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
      // Before: that ssh outlived forward until its ConnectTimeout (10 s), and would have run `berth connect` had the host woken.
      expect(await eventually(() => !isAlive(ssh as number), 5_000)).toBe(true);
      await forward.done;
      expect(forward.out.stdout.trim().split("\n")).toHaveLength(1);
    } finally {
      if (sshdStopped) process.kill(host.sshdPid, "SIGCONT");
    }
  }, 120_000);

  test("a local client sending to a far side that stops reading a while is held back, not buffered by the forward; every byte arrives", async () => {
    const host = await newHost();
    // More than the far side's queue for one tunnel (WRITE_QUEUE_MAX_BYTES, 8 MiB) and every socket buffer on the way.
    const big = randomBytes(64 * 1024 * 1024);
    const received: Buffer[] = [];
    let receivedBytes = 0;
    let farSocket: import("bun").Socket<undefined> | undefined;
    const far = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(socket) {
          farSocket = socket;
          socket.pause(); // a slow reader: nothing is taken until the test says so
        },
        data(_socket, data) {
          received.push(Buffer.from(data));
          receivedBytes += data.length;
        },
      },
    });
    try {
      const { forward, localPort } = await forwardTo(host, far.port);
      const before = rssMiB(forward.proc.pid);
      let peak = before;
      let sent = 0;
      let ended = false;
      const pump = (socket: import("bun").Socket<undefined>) => {
        while (sent < big.length) {
          const written = socket.write(big.subarray(sent, sent + 1024 * 1024));
          if (written <= 0) return;
          sent += written;
        }
        if (!ended) socket.end();
        ended = true;
      };
      await Bun.connect({ hostname: "127.0.0.1", port: localPort, socket: { open: pump, drain: pump, data() {} } });
      expect(await eventually(() => farSocket !== undefined, 30_000)).toBe(true);
      // The far side stays stopped until the client has sent everything or is held back. Before, the forward read it all
      // at once, without waiting for any tunnel/write's answer: it held it in its memory (+246 MiB for these 64 MiB;
      // now ~20 MiB, mostly garbage of the base64 frames).
      await eventually(() => {
        peak = Math.max(peak, rssMiB(forward.proc.pid));
        return ended;
      }, 5_000, 50);
      expect(peak - before).toBeLessThan(64);
      farSocket?.resume();
      expect(await eventually(() => receivedBytes >= big.length, 60_000)).toBe(true);
      expect(receivedBytes).toBe(big.length);
      expect(sha256(Buffer.concat(received))).toBe(sha256(big));
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
    } finally {
      far.stop(true);
    }
  }, 120_000);

  test("a local client that never reads holds the connection at most LOCAL_STALL_MAX_MS: it is reset, and the others are carried again", async () => {
    const host = await newHost();
    const streamBytes = HELD_BACK_STREAM_BYTES;
    const block = randomBytes(MIB);
    let sent = 0;
    // BIG: streamBytes of a repeated random block; anything else: pong.
    const far = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(socket, data) {
          if (data.toString() !== "BIG") return void socket.end("pong");
          const pump = () => {
            while (sent < streamBytes) {
              const offset = sent % MIB;
              const written = socket.write(block.subarray(offset, Math.min(MIB, offset + streamBytes - sent)));
              if (written < 0) return; // closed (the forward reset it): a timer kept retrying would outlive the test
              if (written === 0) return setTimeout(pump, 10);
              sent += written;
            }
          };
          pump();
        },
      },
    });
    try {
      const { forward, localPort } = await forwardTo(host, far.port);
      let stalledClosed = false;
      const stalled = await Bun.connect({ hostname: "127.0.0.1", port: localPort, socket: { data() {}, close: () => void (stalledClosed = true), error() {} } });
      stalled.pause();
      stalled.write("BIG");
      // Every buffer on the way is full and the forward holds the connection for it: the far side cannot send it all.
      expect(await eventually(() => sent === streamBytes, HELD_BACK_WINDOW_MS, 50)).toBe(false);
      // The other client waits behind the stalled one's hold, then is served once it is reset.
      let answer = "";
      await Bun.connect({ hostname: "127.0.0.1", port: localPort, socket: { open: (s) => void s.write("ping"), data: (_s, d) => void (answer += d.toString()) } });
      expect(await eventually(() => answer === "pong", 60_000)).toBe(true);
      expect(forward.out.stderr).toContain("was reset: it read nothing");
      stalled.resume();
      expect(await eventually(() => stalledClosed, 20_000)).toBe(true);
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
    } finally {
      far.stop(true);
    }
  }, 120_000);

  // 3 MiB all leave the far side and wait in the forward's queue; 24 MiB are more than every buffer on the way: the far
  // side is held back. Before, past 8 MiB queued the forward ended the socket: a clean EOF after ~4 MiB, a download that
  // looked whole.
  for (const { bytes, heldBack } of [
    { bytes: 3 * MIB, heldBack: false },
    { bytes: HELD_BACK_STREAM_BYTES, heldBack: true },
  ]) {
    test(`forward keeps every byte for a local reader that pauses while the far side sends ${bytes / MIB} MiB (${heldBack ? "the far side held back" : "queued behind the slow socket"})`, async () => {
      const host = await newHost();
      const big = randomBytes(bytes);
      const far = tcpSender(big, { end: true });
      // Hashed as it arrives: the held-back stream can be ~100 MiB.
      const received = createHash("sha256");
      let receivedBytes = 0;
      let closed = false;
      try {
        const { forward, localPort } = await forwardTo(host, far.port);
        const local = await Bun.connect({
          hostname: "127.0.0.1",
          port: localPort,
          socket: {
            data: (_s, d) => {
              received.update(d);
              receivedBytes += d.length;
            },
            close: () => void (closed = true),
          },
        });
        local.pause();
        if (heldBack) expect(await eventually(() => far.sent() === big.length, HELD_BACK_WINDOW_MS, 50)).toBe(false);
        else expect(await eventually(() => far.sent() === big.length, 30_000)).toBe(true);
        expect(closed).toBe(false);
        local.resume();
        expect(await eventually(() => closed, 60_000)).toBe(true);
        expect(receivedBytes).toBe(big.length);
        expect(received.digest("hex")).toBe(sha256(big));
        expect(forward.out.stderr).not.toContain("reset");
        forward.proc.kill("SIGINT");
        expect(await forward.proc.exited).toBe(0);
      } finally {
        far.stop();
      }
    }, 120_000);
  }
});
