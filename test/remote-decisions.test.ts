// The pure decisions of `berth remote`, as tables: argument parsing, shell
// words, the probe, targets, install plans, offsets and backoff, detach keys.
import { describe, expect, test } from "bun:test";
import { tmpdir } from "node:os";
import { MAIN } from "./helpers/berth.ts";
import { parseForward, parseRemoteArgs, parseSignal } from "../src/client/args.ts";
import { remoteResult } from "../src/client/bootstrap.ts";
import { exitStatusOf } from "../src/client/commands.ts";
import { classifyPreamble, LineSplitter } from "../src/client/lines.ts";
import { OffsetTracker, parseDetachKey, reconnectDelayMs, RECONNECT_MAX_DELAY_MS, splitAtDetachKey } from "../src/client/offsets.ts";
import { parseProbe, planInstall, targetOf } from "../src/client/probe.ts";
import { assetFor } from "../src/client/release.ts";
import { lastLine, remoteBerthCommand, shCommand, shellWords, shQuote } from "../src/client/ssh.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (data: Uint8Array) => new TextDecoder().decode(data);

describe("shellWords splits BERTH_SSH as a shell would", () => {
  const cases: [string, string[]][] = [
    ["ssh", ["ssh"]],
    ["  ssh   -F ./test_config ", ["ssh", "-F", "./test_config"]],
    [`ssh -F './my config'`, ["ssh", "-F", "./my config"]],
    [`ssh -F "/a b/c" -o 'ProxyCommand=nc %h %p'`, ["ssh", "-F", "/a b/c", "-o", "ProxyCommand=nc %h %p"]],
    [`ssh -o A\\ B`, ["ssh", "-o", "A B"]],
    [`ssh ""`, ["ssh", ""]],
    [`ssh "a\\"b"`, ["ssh", 'a"b']],
    [`ssh it's fine'`, ["ssh", "its fine"]],
  ];
  for (const [input, output] of cases) test(JSON.stringify(input), () => expect(shellWords(input)).toEqual(output));
  test("an unclosed quote is a usage error", () => expect(() => shellWords(`ssh -F 'x`)).toThrow("unclosed"));
});

describe("remote commands are one single-quoted sh word", () => {
  test("shQuote", () => {
    expect(shQuote("abc/def-1.2")).toBe("abc/def-1.2");
    expect(shQuote("a b")).toBe("'a b'");
    expect(shQuote("it's")).toBe(`'it'\\''s'`);
  });
  test("shCommand refuses quotes, ! and newlines", () => {
    expect(shCommand("echo hi")).toBe("/bin/sh -c 'echo hi'");
    for (const bad of ["echo 'x'", "echo !x", "a\nb"]) expect(() => shCommand(bad)).toThrow();
  });
  test("remoteBerthCommand finds the managed binary without start-up files", () => {
    const command = remoteBerthCommand(["connect", "--no-start"]);
    expect(command.startsWith("/bin/sh -c '")).toBe(true);
    expect(command).toContain("${BERTH_HOME:-$HOME/.berth}/packages/standalone/current/berth");
    expect(command).toContain('exec "$b" connect --no-start');
    expect(command).toContain("exit 127");
  });
  test("lastLine", () => {
    expect(lastLine("a\r\nssh: connect to host x port 1: Connection refused\r\n\r\n")).toBe("ssh: connect to host x port 1: Connection refused");
    expect(lastLine("")).toBe("");
  });
});

describe("parseRemoteArgs", () => {
  const ok: [string[], object][] = [
    [["h", "bootstrap"], { host: "h", command: "bootstrap", remoteControl: false }],
    [["h", "bootstrap", "--remote-control"], { command: "bootstrap", remoteControl: true }],
    [["h", "shell"], { command: "shell", name: "main" }],
    [["me@h", "shell", "work"], { host: "me@h", command: "shell", name: "work" }],
    [["h", "run", "--", "ls", "-la"], { command: "run", argv: ["ls", "-la"] }],
    [["h", "run", "--name", "build", "--", "make", "--jobs=2"], { command: "run", name: "build", argv: ["make", "--jobs=2"] }],
    [["h", "run", "--name=b", "--", "x"], { name: "b", argv: ["x"] }],
    [["h", "attach", "p1"], { command: "attach", target: "p1" }],
    [["h", "ps"], { command: "ps" }],
    [["h", "kill", "p1"], { command: "kill", target: "p1", signal: "SIGTERM" }],
    [["h", "kill", "p1", "hup"], { signal: "SIGHUP" }],
    [["h", "forward", "8080:localhost:80"], { forward: { localHost: "127.0.0.1", localPort: 8080, remoteHost: "localhost", remotePort: 80 } }],
  ];
  for (const [argv, expected] of ok) test(argv.join(" "), () => expect(parseRemoteArgs(argv)).toMatchObject(expected));
  const bad: string[][] = [
    [],
    ["-oProxyCommand=x", "shell"],
    ["h"],
    ["h", "frobnicate"],
    ["h", "bootstrap", "--force"],
    ["h", "run", "ls"],
    ["h", "run", "--"],
    ["h", "attach"],
    ["h", "ps", "x"],
    ["h", "kill", "p1", "SIGFOO"],
    ["h", "forward", "80:x"],
    ["h", "forward", "0:x:80"],
    ["h", "shell", "a", "b"],
  ];
  for (const argv of bad) {
    test(`USAGE: ${JSON.stringify(argv)}`, () => expect(() => parseRemoteArgs(argv)).toThrow(expect.objectContaining({ code: "USAGE" })));
  }
  test("forward with a local host and IPv6 brackets", () => {
    expect(parseForward("0.0.0.0:9000:[::1]:3000")).toEqual({ localHost: "0.0.0.0", localPort: 9000, remoteHost: "::1", remotePort: 3000 });
    expect(parseSignal("SIGKILL")).toBe("SIGKILL");
  });
});

describe("the probe", () => {
  const output = [
    "welcome! (bashrc noise)",
    "berth-probe:os=Linux",
    "berth-probe:machine=x86_64",
    "berth-probe:ldd=ldd (Debian GLIBC 2.36-9) 2.36",
    "berth-probe:translated=",
    "berth-probe:home=/home/me",
    "berth-probe:berth=/home/me/.berth/packages/standalone/current/berth",
    "berth-probe:version=1.2.3",
    "berth-probe:curl=/usr/bin/curl",
    "berth-probe:wget=",
    "berth-probe:done=1",
  ].join("\r\n");
  test("parses its lines and ignores noise", () => {
    expect(parseProbe(output)).toEqual({
      os: "Linux",
      machine: "x86_64",
      ldd: "ldd (Debian GLIBC 2.36-9) 2.36",
      muslLoader: false,
      translated: false,
      home: "/home/me",
      berth: "/home/me/.berth/packages/standalone/current/berth",
      version: "1.2.3",
      curl: "/usr/bin/curl",
    });
  });
  test("noise printed without a newline opens the first probe line: that line still counts", () => {
    const noisy = output.replace("berth-probe:os=", "\x1b]0;far title\x07berth-probe:os=");
    expect(noisy).not.toBe(output);
    expect(parseProbe(noisy)).toEqual(parseProbe(output));
  });
  test("a cut-off probe is no probe", () => expect(parseProbe("berth-probe:os=Linux\n")).toBeUndefined());
  test("a version that is not one is ignored", () => expect(parseProbe("berth-probe:version=garbage\nberth-probe:done=1")?.version).toBeUndefined());

  const targets: [object, string][] = [
    [{ os: "Linux", machine: "x86_64", ldd: "ldd (GNU libc) 2.31", muslLoader: false, translated: false }, "linux-x64"],
    [{ os: "Linux", machine: "aarch64", ldd: "musl libc (aarch64)", muslLoader: true, translated: false }, "linux-arm64-musl"],
    [{ os: "Linux", machine: "x86_64", ldd: "sh: ldd: not found", muslLoader: true, translated: false }, "linux-x64-musl"],
    [{ os: "Linux", machine: "x86_64", ldd: "ldd (Debian GLIBC 2.36) 2.36", muslLoader: true, translated: false }, "linux-x64"],
    [{ os: "Darwin", machine: "arm64", ldd: "", muslLoader: false, translated: false }, "darwin-arm64"],
    [{ os: "Darwin", machine: "x86_64", ldd: "", muslLoader: false, translated: true }, "darwin-arm64"],
    [{ os: "Darwin", machine: "x86_64", ldd: "", muslLoader: false, translated: false }, "darwin-x64"],
  ];
  for (const [probe, target] of targets) test(`target ${target}`, () => expect(targetOf(probe as any, "h")).toBe(target as any));
  test("other platforms are UNSUPPORTED_PLATFORM", () => {
    for (const probe of [{ os: "FreeBSD", machine: "amd64" }, { os: "Linux", machine: "riscv64" }]) {
      expect(() => targetOf({ ...probe, ldd: "", muslLoader: false, translated: false }, "h")).toThrow(expect.objectContaining({ code: "UNSUPPORTED_PLATFORM" }));
    }
  });

  const plans: [string | undefined, string | undefined, object][] = [
    [undefined, "1.0.0", { action: "install", version: "1.0.0" }],
    [undefined, undefined, { action: "install" }],
    ["1.0.0", "1.0.0", { action: "none" }],
    ["1.1.0", "1.0.0", { action: "none" }],
    ["1.0.0", undefined, { action: "none" }],
    ["1.0.0", "1.2.0", { action: "update", version: "1.2.0" }],
  ];
  for (const [installed, latest, plan] of plans) test(`plan ${installed} vs ${latest}`, () => expect(planInstall(installed, latest)).toEqual(plan as any));
});

describe("release assets and remote results", () => {
  test("assetFor picks the target and refuses odd file names", () => {
    const manifest = { assets: [{ target: "linux-x64", file: "berth-linux-x64.gz", sha256: "ab", binarySha256: "cd" }, { target: "darwin-arm64", file: "../x", sha256: "ef" }] };
    expect(assetFor(manifest, "linux-x64")?.file).toBe("berth-linux-x64.gz");
    expect(assetFor(manifest, "darwin-arm64")).toBeUndefined();
    expect(assetFor({}, "linux-x64")).toBeUndefined();
  });
  test("remoteResult reads the last JSON object past noise", () => {
    expect(remoteResult('noise\n{"status":"bootstrapped"}\n')).toEqual({ status: "bootstrapped" });
    expect(remoteResult('{"a":1}\nnot json\n')).toEqual({ a: 1 });
    expect(remoteResult("nothing\n")).toBeUndefined();
    // Noise without a newline before the only line berth printed.
    expect(remoteResult('\x1b]0;far title\x07{"status":"bootstrapped","pid":3}\n')).toEqual({ status: "bootstrapped", pid: 3 });
    expect(remoteResult('{"x":{"status":"y"}}\n')).toEqual({ x: { status: "y" } });
  });
});

describe("the connection preamble", () => {
  const cases: [string, string][] = [
    ['{"status":"connected","protocol":1,"pid":12,"appServerVersion":"1","cliVersion":"1","socketPath":"/s"}', "connected"],
    ['{"status":"error","error":{"code":"NOT_INSTALLED","message":"m"}}', "error"],
    ["Welcome to Ubuntu", "noise"],
    ["{ not json", "noise"],
    ['{"status":"connected"}', "noise"],
    // A start-up file that prints without a newline (a title escape, printf) opens berth's own line.
    ['\x1b]0;far title\x07{"status":"connected","protocol":1,"pid":12,"appServerVersion":"1","cliVersion":"1","socketPath":"/s"}', "connected"],
    ['welcome, no newline{"status":"error","error":{"code":"NOT_INSTALLED","message":"m"}}', "error"],
    ['noise {"status":"connected","pid":"12"}', "noise"],
  ];
  for (const [line, kind] of cases) test(kind, () => expect(classifyPreamble(line).kind).toBe(kind as any));
  test("LineSplitter keeps partial lines and multibyte characters whole", () => {
    const splitter = new LineSplitter(64);
    const euro = bytes("€");
    expect(splitter.push(bytes("a\nb"))).toEqual(["a"]);
    expect(splitter.push(euro.subarray(0, 1))).toEqual([]);
    expect(splitter.push(new Uint8Array([...euro.subarray(1), 10]))).toEqual(["b€"]);
    expect(() => splitter.push(bytes("x".repeat(100)))).toThrow();
  });
  test("LineSplitter gives the lines of the whole stream however it is cut", () => {
    const stream = bytes(`one\n\ntwo €\n${"x".repeat(5_000)}\n€€\nthree\nunfinished €`);
    const whole = new TextDecoder().decode(stream).split("\n").slice(0, -1);
    let seed = 7;
    const random = (n: number) => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % n;
    for (const most of [1, 2, 3, 7, 64, 4_096, stream.length]) {
      const splitter = new LineSplitter(10_000);
      const lines: string[] = [];
      for (let at = 0; at < stream.length; ) {
        const size = 1 + random(most);
        lines.push(...splitter.push(stream.subarray(at, at + size)));
        at += size;
      }
      expect(lines).toEqual(whole);
    }
    // The bound counts the unfinished line across pushes.
    const bounded = new LineSplitter(10);
    expect(bounded.push(bytes("12345"))).toEqual([]);
    expect(() => bounded.push(bytes("678901"))).toThrow();
  });
});

describe("offsets: every byte once, in order", () => {
  test("a table of arrivals", () => {
    const tracker = new OffsetTracker();
    const steps: [string, number, string, string, number][] = [
      ["terminal", 0, "hello", "hello", 0],
      ["terminal", 5, " world", " world", 0],
      ["terminal", 0, "hello world", "", 0], // replay after a reconnect: all seen
      ["terminal", 8, "rld!!", "!!", 0], // overlap: only the new part
      ["terminal", 20, "late", "late", 7], // a gap the host no longer kept
      ["stderr", 3, "x", "x", 0], // first sight of a stream at a truncated start
    ];
    for (const [stream, offset, data, fresh, lost] of steps) {
      const got = tracker.accept(stream, offset, bytes(data));
      expect([text(got.fresh), got.lost]).toEqual([fresh, lost]);
    }
    expect(tracker.since()).toEqual({ terminal: 24, stderr: 4 });
    expect(tracker.reached({ terminal: 24, stderr: 4 })).toBe(true);
    expect(tracker.reached({ terminal: 25 })).toBe(false);
    expect(tracker.reached({ stdout: 0 })).toBe(true);
  });
  test("reconnect backoff grows and stays within 10 s", () => {
    expect([0, 1, 2, 3, 4].map(reconnectDelayMs)).toEqual([0, 250, 500, 1000, 2000]);
    for (let attempt = 0; attempt < 100; attempt += 1) expect(reconnectDelayMs(attempt)).toBeLessThanOrEqual(RECONNECT_MAX_DELAY_MS);
    expect(reconnectDelayMs(50)).toBe(RECONNECT_MAX_DELAY_MS);
  });
  test("detach key", () => {
    expect(parseDetachKey(undefined)).toBe(0x1c);
    expect(parseDetachKey("^]")).toBe(0x1d);
    expect(parseDetachKey("^a")).toBe(0x01);
    expect(parseDetachKey("none")).toBeUndefined();
    expect(() => parseDetachKey("x")).toThrow();
    const split = splitAtDetachKey(bytes("ls\x1cmore"), 0x1c);
    expect([text(split.send), split.detach]).toEqual(["ls", true]);
    expect(splitAtDetachKey(bytes("ls"), 0x1c).detach).toBe(false);
    expect(splitAtDetachKey(bytes("\x1c"), undefined).detach).toBe(false);
  });
  test("exit status of an outcome", () => {
    expect(exitStatusOf({ kind: "exited", exitCode: 7, signal: null })).toBe(7);
    expect(exitStatusOf({ kind: "exited", exitCode: null, signal: "SIGKILL" })).toBe(137);
    expect(exitStatusOf({ kind: "detached" })).toBe(0);
    expect(exitStatusOf({ kind: "lost", reason: "x" })).toBe(1);
  });
});

describe("the remote command line", () => {
  test("--help after -- belongs to the remote command; a failing ssh before `connected` is SSH_FAILED with its words", async () => {
    const child = Bun.spawn([process.execPath, MAIN, "remote", "somehost", "run", "--", "ls", "--help"], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: tmpdir(), BERTH_SSH: "sh -c 'echo no route to somehost >&2; exit 1' sh", NO_COLOR: "1" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [stdout, code] = await Promise.all([new Response(child.stdout).text(), child.exited]);
    expect(code).toBe(1);
    const object = JSON.parse(stdout);
    expect(object.error.code).toBe("SSH_FAILED");
    expect(object.error.message).toContain("no route to somehost");
  });
});
