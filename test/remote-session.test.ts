/**
 * `berth remote HOST shell|run|attach|ps|kill|forward` end to end: a real
 * sshd on loopback, the far side's berth (from source) started by
 * `berth connect`, and the client driven through a real pseudo-terminal.
 * The ssh process is SIGKILLed mid-stream to stand for a dropped network.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../src/client/connection.ts";
import { BUN, eventually, installRelease, killProcessesOf, MAIN, parseLastJsonLine } from "./helpers/berth.ts";
import { PtyProcess } from "./helpers/pty.ts";
import { tcpSender } from "./helpers/tcp-sender.ts";
import { connectSshUnder, freePort, sshdUnavailable, startSshd, type SshHost } from "./helpers/sshd.ts";

const LINES = 400;
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
async function newHost(): Promise<SshHost> {
  const host = await startSshd({ bashrc: 'echo "noise from .bashrc before berth connect"' });
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
    const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
    const far = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: async (req) => {
        const path = new URL(req.url).pathname;
        if (path === "/big") return new Response(big);
        if (path === "/hash") return new Response(sha(new Uint8Array(await req.arrayBuffer())));
        return new Response(`far side says hi to ${path}`);
      },
    });
    try {
      const localPort = freePort();
      const forward = spawnPiped(host, ["forward", `${localPort}:127.0.0.1:${far.port}`]);
      expect(await eventually(() => forward.out.stdout.includes("\n"), 30_000)).toBe(true);
      expect(JSON.parse(forward.out.stdout.split("\n")[0] as string)).toMatchObject({ status: "forwarding", local: `127.0.0.1:${localPort}` });
      for (const path of ["/one", "/two"]) {
        const response = await fetch(`http://127.0.0.1:${localPort}${path}`);
        expect(await response.text()).toBe(`far side says hi to ${path}`);
      }
      expect(sha(new Uint8Array(await (await fetch(`http://127.0.0.1:${localPort}/big`)).arrayBuffer()))).toBe(sha(big));
      expect(await (await fetch(`http://127.0.0.1:${localPort}/hash`, { method: "POST", body: big })).text()).toBe(sha(big));
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
    } finally {
      await far.stop(true);
    }
  }, 120_000);

  test("forward survives a dropped connection: open tunnels end, it reconnects, and new local connections are carried again", async () => {
    const host = await newHost();
    const far = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => new Response(`far side says hi to ${new URL(req.url).pathname}`) });
    let liveClosed = false;
    try {
      const localPort = freePort();
      const forward = spawnPiped(host, ["forward", `${localPort}:127.0.0.1:${far.port}`]);
      expect(await eventually(() => forward.out.stdout.includes("\n"), 30_000)).toBe(true);
      expect(await (await fetch(`http://127.0.0.1:${localPort}/before`)).text()).toBe("far side says hi to /before");
      // A tunnel that is open when the connection dies: half a request, waiting for the rest.
      const live = await Bun.connect({ hostname: "127.0.0.1", port: localPort, socket: { data() {}, close: () => void (liveClosed = true) } });
      live.write("GET /half HTTP/1.1\r\n");
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
    const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
    const far = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: async (req) => {
        const path = new URL(req.url).pathname;
        return new Response(path === "/hash" ? sha(new Uint8Array(await req.arrayBuffer())) : `far side says hi to ${path}`);
      },
    });
    let sshdStopped = false;
    try {
      const localPort = freePort();
      const forward = spawnPiped(host, ["forward", `${localPort}:127.0.0.1:${far.port}`]);
      expect(await eventually(() => forward.out.stdout.includes("\n"), 30_000)).toBe(true);
      expect(await (await fetch(`http://127.0.0.1:${localPort}/before`)).text()).toBe("far side says hi to /before");
      // sshd frozen: reconnect attempts hang at the banner until it runs again.
      process.kill(host.sshdPid, "SIGSTOP");
      sshdStopped = true;
      process.kill(connectSshUnder(forward.proc.pid) as number, "SIGKILL");
      expect(await eventually(() => forward.out.stderr.includes("reconnecting"), 30_000)).toBe(true);
      let settled = false;
      const during = fetch(`http://127.0.0.1:${localPort}/during`).then(async (response) => await response.text()).finally(() => (settled = true));
      // More than the forward holds for a tunnel not yet open (LOCAL_PENDING_MAX_BYTES): it pauses that socket, losing nothing.
      const posted = fetch(`http://127.0.0.1:${localPort}/hash`, { method: "POST", body: big }).then(async (response) => await response.text());
      // Not refused while the host cannot be reached: still waiting a moment later.
      expect(await eventually(() => settled, 500, 50)).toBe(false);
      process.kill(host.sshdPid, "SIGCONT");
      sshdStopped = false;
      expect(await during).toBe("far side says hi to /during");
      expect(await posted).toBe(sha(big));
      expect(forward.out.stderr).toContain("reconnected");
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
    } finally {
      if (sshdStopped) process.kill(host.sshdPid, "SIGCONT");
      await far.stop(true);
    }
  }, 120_000);

  test("forward keeps every byte for a local reader that pauses while the far side sends (tunnel/data queued behind a slow socket)", async () => {
    const host = await newHost();
    const big = randomBytes(3 * 1024 * 1024);
    const far = tcpSender(big, { end: true });
    const received: Buffer[] = [];
    let closed = false;
    try {
      const localPort = freePort();
      const forward = spawnPiped(host, ["forward", `${localPort}:127.0.0.1:${far.port}`]);
      expect(await eventually(() => forward.out.stdout.includes("\n"), 30_000)).toBe(true);
      const local = await Bun.connect({
        hostname: "127.0.0.1",
        port: localPort,
        socket: { data: (_s, d) => void received.push(Buffer.from(d)), close: () => void (closed = true) },
      });
      local.pause();
      // Everything has left the far side: most of it now waits in the forward's queue for the paused reader.
      expect(await eventually(() => far.sent() === big.length, 30_000)).toBe(true);
      local.resume();
      expect(await eventually(() => closed, 30_000)).toBe(true);
      expect(createHash("sha256").update(Buffer.concat(received)).digest("hex")).toBe(createHash("sha256").update(big).digest("hex"));
      forward.proc.kill("SIGINT");
      expect(await forward.proc.exited).toBe(0);
    } finally {
      far.stop();
    }
  }, 120_000);
});
