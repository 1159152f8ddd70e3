// install.sh: runs the real script under every POSIX shell we support, against
// a release folder served over loopback HTTP (or file://), with a fake berth
// binary that records how it was called.
import { test, expect, describe, afterAll } from "bun:test";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { foldersAndServers, serveDirectory } from "./helpers/release-server";
import { newKey, writeSigned, type TestKey } from "./helpers/signed-release";

const SCRIPT = join(import.meta.dir, "..", "install.sh");
const PLACEHOLDER = "__BERTH_RELEASE_BASE_URL__";
const SYSTEM_PATH = process.env.PATH || "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const TARGETS = ["linux-x64", "linux-arm64", "linux-x64-musl", "linux-arm64-musl", "darwin-x64", "darwin-arm64"];
const LATEST = "1.4.0";
const OLDER = "1.3.0";
const FAKE_STDOUT = '{"status":"installed"}\n';

const which = (cmd: string) => Bun.which(cmd, { PATH: SYSTEM_PATH });
const has = (cmd: string) => which(cmd) !== null;

const { tempDir, serve } = foldersAndServers(afterAll, "berth-install-sh-");

const sha256 = (data: string | Uint8Array) => createHash("sha256").update(data).digest("hex");
/** Release assets are gzip files (`berth-<target>.gz`); install.sh runs `gzip -d`. */
const gz = (body: string) => Bun.gzipSync(Buffer.from(body));

/** A stand-in for the berth binary: records argv, $0 and the env it got, prints one JSON line. */
function fakeBerth(version: string): string {
  return `#!/bin/sh
{
  printf 'version=%s\\n' '${version}'
  printf 'self=%s\\n' "$0"
  printf 'home=%s\\n' "\${BERTH_HOME-<unset>}"
  printf 'installdir=%s\\n' "\${BERTH_INSTALL_DIR-<unset>}"
  for a in "$@"; do printf 'arg=%s\\n' "$a"; done
} > "$FAKE_BERTH_MARKER"
printf '%s\\n' '{"status":"installed"}'
exit "\${FAKE_BERTH_EXIT:-0}"
`;
}

/** <dir>/install.sh, latest.json, <version>/{SHA256SUMS, berth-<target> for all six targets}. */
function buildRelease(): string {
  const dir = tempDir("release");
  copyFileSync(SCRIPT, join(dir, "install.sh"));
  // whitespace and newlines the parser must tolerate
  writeFileSync(join(dir, "latest.json"), `{\n  "version" :\n    "${LATEST}"\n}\n`);
  for (const version of [LATEST, OLDER]) {
    mkdirSync(join(dir, version));
    const lines: string[] = [];
    for (const target of TARGETS) {
      const body = fakeBerth(version);
      writeFileSync(join(dir, version, `berth-${target}.gz`), gz(body));
      lines.push(`${sha256(gz(body))}  berth-${target}.gz`);
    }
    writeFileSync(join(dir, version, "SHA256SUMS"), lines.join("\n") + "\n");
  }
  return dir;
}

/** A folder of executables: links to the named system tools plus small fake scripts. */
function binDir(links: string[], fakes: Record<string, string> = {}): string {
  const dir = tempDir("bin");
  for (const tool of links) {
    const real = which(tool);
    if (real) symlinkSync(real, join(dir, tool));
  }
  for (const [name, body] of Object.entries(fakes)) {
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  }
  return dir;
}

// What install.sh needs besides a downloader and a checksum tool.
const BASE_TOOLS = ["uname", "mktemp", "rm", "cp", "chmod", "sed", "tr", "grep", "head", "cat", "ldd", "gzip", "wc"];

interface RunOptions {
  shell?: string[];
  args?: string[];
  baseUrl?: string;
  env?: Record<string, string | undefined>;
  script?: string;
  /** feed the script on stdin (`sh -s -- ARGS`), like `curl … | sh -s --` */
  viaStdin?: boolean;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  marker: string | null;
  args: string[];
  lines: Record<string, string>;
  ctx: { tmp: string; home: string; installDir: string };
}

async function runInstall(opts: RunOptions = {}): Promise<RunResult> {
  const dir = tempDir("run");
  const tmp = join(dir, "tmp");
  mkdirSync(tmp);
  const home = join(dir, "berth-home");
  const installDir = join(dir, "bin", "berth");
  const markerPath = join(dir, "marker");
  const env: Record<string, string> = {};
  const merged: Record<string, string | undefined> = {
    PATH: SYSTEM_PATH,
    HOME: join(dir, "user"),
    TMPDIR: tmp,
    BERTH_HOME: home,
    BERTH_INSTALL_DIR: installDir,
    BERTH_INSTALL_TARGET: "linux-x64",
    BERTH_RELEASE_BASE_URL: opts.baseUrl,
    FAKE_BERTH_MARKER: markerPath,
    ...opts.env,
  };
  for (const [k, v] of Object.entries(merged)) if (v !== undefined) env[k] = v;

  const [shellCmd, ...shellArgs] = opts.shell ?? ["sh"];
  const shell = which(shellCmd!) ?? shellCmd!;
  const script = opts.script ?? SCRIPT;
  const args = opts.args ?? [];
  const cmd = opts.viaStdin ? [shell, ...shellArgs, "-s", "--", ...args] : [shell, ...shellArgs, script, ...args];
  const proc = Bun.spawn(cmd, {
    cwd: dir,
    env,
    stdin: opts.viaStdin ? Bun.file(script) : "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);

  // Whatever happened: the temp folder is gone and nothing was written for berth.
  expect(readdirSync(tmp)).toEqual([]);
  expect(existsSync(home)).toBe(false);
  expect(existsSync(join(dir, "bin"))).toBe(false);

  const marker = existsSync(markerPath) ? readFileSync(markerPath, "utf8") : null;
  const lines: Record<string, string> = {};
  const argv: string[] = [];
  for (const line of (marker ?? "").split("\n")) {
    const eq = line.indexOf("=");
    if (eq < 0) continue;
    const key = line.slice(0, eq);
    if (key === "arg") argv.push(line.slice(eq + 1));
    else lines[key] = line.slice(eq + 1);
  }
  return { code, stdout, stderr, marker, args: argv, lines, ctx: { tmp, home, installDir } };
}

function expectInstalled(r: RunResult, version: string, args: string[]) {
  if (r.code !== 0) throw new Error(`install.sh exited ${r.code}: ${r.stderr}`);
  expect(r.stdout).toBe(FAKE_STDOUT);
  expect(r.lines.version).toBe(version);
  expect(r.args).toEqual(args);
  expect(r.lines.home).toBe(r.ctx.home);
  expect(r.lines.installdir).toBe(r.ctx.installDir);
  // it ran the downloaded copy from inside the (now removed) temp folder
  expect(r.lines.self!.startsWith(r.ctx.tmp + "/")).toBe(true);
  for (const line of r.stderr.trim().split("\n").filter(Boolean)) {
    expect(line.startsWith("berth-install: ")).toBe(true);
  }
}

/** Exactly one stdout line, the spec's error object (what a client over SSH reads last). */
function expectErrorObject(r: RunResult, code: string, pattern: RegExp) {
  const lines = r.stdout.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  const object = JSON.parse(lines[0]!);
  expect(object).toEqual({ status: "error", error: { code, message: expect.stringMatching(pattern) } });
}

function expectFailed(r: RunResult, pattern: RegExp, code = "INSTALL_FAILED") {
  expect(r.code).not.toBe(0);
  expect(r.marker).toBeNull();
  expectErrorObject(r, code, pattern);
  // only our own lines (no raw curl/wget noise), the last one saying what went wrong
  const lines = r.stderr.trimEnd().split("\n");
  for (const line of lines) expect(line).toMatch(/^berth-install: /);
  expect(lines.at(-1)).toMatch(pattern);
}

const release = buildRelease();
const server = await serve(release);

const SHELLS: { name: string; cmd: string[] }[] = [
  { name: "sh", cmd: ["sh"] },
  { name: "dash", cmd: ["dash"] },
  { name: "bash", cmd: ["bash"] },
  { name: "zsh", cmd: ["zsh"] },
  { name: "busybox sh", cmd: ["busybox", "sh"] },
];
const DOWNLOADERS = ["curl", "wget"];
const SHA_TOOLS = ["sha256sum", "shasum", "openssl"];

describe("install.sh static checks", () => {
  test.skipIf(!has("shellcheck"))("shellcheck -s sh finds nothing", async () => {
    const proc = Bun.spawn(["shellcheck", "-s", "sh", SCRIPT], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
    expect(out).toBe("");
    expect(code).toBe(0);
  });

  test("the placeholder appears once, on the BERTH_DEFAULT_BASE_URL line", () => {
    const text = readFileSync(SCRIPT, "utf8");
    const hits = text.split("\n").filter((l) => l.includes(PLACEHOLDER));
    expect(hits).toEqual([`BERTH_DEFAULT_BASE_URL="${PLACEHOLDER}"`]);
  });
});

for (const shell of SHELLS) {
  const absent = !has(shell.cmd[0]!);
  describe(`install.sh under ${shell.name}`, () => {
    for (const downloader of DOWNLOADERS) {
      for (const tool of SHA_TOOLS) {
        test.skipIf(absent || !has(downloader) || !has(tool))(`installs the latest release (${downloader}, ${tool})`, async () => {
          const r = await runInstall({
            shell: shell.cmd,
            baseUrl: server.url,
            args: ["--bootstrap", "--no-modify-path"],
            env: { BERTH_DOWNLOADER: downloader, BERTH_SHA256_TOOL: tool },
          });
          expectInstalled(r, LATEST, ["install", "--bootstrap", "--no-modify-path"]);
        });
      }
    }

    test.skipIf(absent)("works piped on stdin (sh -s -- …)", async () => {
      const r = await runInstall({ shell: shell.cmd, baseUrl: server.url, viaStdin: true, args: ["--bootstrap"] });
      expectInstalled(r, LATEST, ["install", "--bootstrap"]);
    });

    test.skipIf(absent)("--release v1.3.0 installs that version", async () => {
      const r = await runInstall({
        shell: shell.cmd,
        baseUrl: server.url,
        args: ["--release", `v${OLDER}`, "--remote-control"],
      });
      expectInstalled(r, OLDER, ["install", "--remote-control"]);
    });

    test.skipIf(absent)("a missing version fails and installs nothing", async () => {
      const r = await runInstall({ shell: shell.cmd, baseUrl: server.url, args: ["--release", "9.9.9"] });
      expectFailed(r, /could not download .*9\.9\.9/, "DOWNLOAD_FAILED");
    });

    test.skipIf(absent)("a base URL nobody serves: the error object is the last stdout line", async () => {
      const s = await serveDirectory(release);
      await s.stop();
      const r = await runInstall({ shell: shell.cmd, baseUrl: `${s.url}/nowhere` });
      expect(r.code).toBe(1);
      expectFailed(r, /could not download .*\/nowhere\/latest\.json/, "DOWNLOAD_FAILED");
    });

    test.skipIf(absent)("a message with quotes and backslashes stays valid JSON", async () => {
      const r = await runInstall({ shell: shell.cmd, baseUrl: 'ftp://a"b\\c\tq' });
      expectFailed(r, /BERTH_RELEASE_BASE_URL='ftp:\/\/a"b\\c\sq' must start with/);
    });

    test.skipIf(absent)("a corrupt binary fails the checksum", async () => {
      const dir = buildRelease();
      writeFileSync(join(dir, LATEST, "berth-linux-x64.gz"), gz(fakeBerth(LATEST) + "# tampered\n"));
      const r = await runInstall({ shell: shell.cmd, baseUrl: `file://${dir}` });
      expectFailed(r, /checksum mismatch/, "CHECKSUM_MISMATCH");
    });

    test.skipIf(absent)("an unknown flag exits 2 with the USAGE object", async () => {
      const r = await runInstall({ shell: shell.cmd, baseUrl: server.url, args: ["--bootstrap", "--frobnicate"] });
      expect(r.code).toBe(2);
      expect(r.stderr).toBe("berth-install: unknown option '--frobnicate'; run with --help to see the options.\n");
      expectErrorObject(r, "USAGE", /unknown option '--frobnicate'/);
      expect(r.marker).toBeNull();
    });

    test.skipIf(absent)("--help prints usage on stdout and exits 0", async () => {
      const r = await runInstall({ shell: shell.cmd, args: ["--help"], env: { BERTH_RELEASE_BASE_URL: undefined } });
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Usage:");
      expect(r.stdout).toContain("--release VERSION");
      expect(r.stdout).toMatch(/BERTH_INSTALL_DIR +the folder for the command link/);
      expect(r.stderr).toBe("");
      expect(r.marker).toBeNull();
    });
  });
}

describe("install.sh release resolution", () => {
  test("reads latest.json when no --release is given", async () => {
    const s = await serve(release);
    const r = await runInstall({ baseUrl: s.url, args: ["--no-modify-path"] });
    expectInstalled(r, LATEST, ["install", "--no-modify-path"]);
    expect(s.requests).toEqual(["/latest.json", `/${LATEST}/berth-linux-x64.gz`, `/${LATEST}/SHA256SUMS`]);
  });

  test("--release skips latest.json (also as --release=VERSION)", async () => {
    const s = await serve(release);
    const r = await runInstall({ baseUrl: `${s.url}/`, args: [`--release=${OLDER}`] });
    expectInstalled(r, OLDER, ["install"]);
    expect(s.requests).toEqual([`/${OLDER}/berth-linux-x64.gz`, `/${OLDER}/SHA256SUMS`]);
  });

  test("file:// base works without curl or wget", async () => {
    const path = binDir([...BASE_TOOLS, "sha256sum"]);
    const r = await runInstall({ baseUrl: `file://${release}`, env: { PATH: path }, args: ["--bootstrap"] });
    expectInstalled(r, LATEST, ["install", "--bootstrap"]);
  });

  test("uses the base URL baked in at release time", async () => {
    const dir = tempDir("baked");
    const script = join(dir, "install.sh");
    const proc = Bun.spawnSync(["sed", `s|${PLACEHOLDER}|${server.url}/|`, SCRIPT], { stdin: "ignore" });
    expect(proc.exitCode).toBe(0);
    writeFileSync(script, proc.stdout);
    const r = await runInstall({ script, args: ["--bootstrap", "--no-modify-path"] });
    expectInstalled(r, LATEST, ["install", "--bootstrap", "--no-modify-path"]);
  });

  test("without a baked-in URL or BERTH_RELEASE_BASE_URL it says what to set", async () => {
    const r = await runInstall({});
    expectFailed(r, /set BERTH_RELEASE_BASE_URL/);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });

  test("a base URL that is not http(s) or file is refused", async () => {
    const r = await runInstall({ baseUrl: "ftp://example.invalid/berth" });
    expectFailed(r, /must start with https:\/\/, http:\/\/ or file:\/\//);
  });

  test("an odd --release is refused before any request", async () => {
    const s = await serve(release);
    for (const bad of ["../1.4.0", "1.4", "1.4.0/../../x", "latest"]) {
      const r = await runInstall({ baseUrl: s.url, args: ["--release", bad] });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/is not a version like 1\.4\.0/);
      expect(r.marker).toBeNull();
    }
    const r = await runInstall({ baseUrl: s.url, args: ["--release"] });
    expect(r.code).toBe(2);
    expect(s.requests).toEqual([]);
  });

  test("a prerelease version is accepted", async () => {
    const dir = buildRelease();
    mkdirSync(join(dir, "2.0.0-rc.1"));
    const body = fakeBerth("2.0.0-rc.1");
    writeFileSync(join(dir, "2.0.0-rc.1", "berth-linux-x64.gz"), gz(body));
    // uppercase hex, a binary-mode marker and CRLF: all tolerated
    writeFileSync(join(dir, "2.0.0-rc.1", "SHA256SUMS"), `${sha256(gz(body)).toUpperCase()} *berth-linux-x64.gz\r\n`);
    const r = await runInstall({ baseUrl: `file://${dir}`, args: ["--release", "2.0.0-rc.1"] });
    expectInstalled(r, "2.0.0-rc.1", ["install"]);
  });

  test("a latest.json without a valid version fails", async () => {
    const dir = buildRelease();
    writeFileSync(join(dir, "latest.json"), '{"version":"../../etc"}');
    const r = await runInstall({ baseUrl: `file://${dir}` });
    expectFailed(r, /latest\.json does not name a valid version/, "DOWNLOAD_FAILED");
  });

  test("the binary's exit code is passed on, an error object is last, and the temp folder still removed", async () => {
    const r = await runInstall({ baseUrl: server.url, env: { FAKE_BERTH_EXIT: "3" } });
    expect(r.code).toBe(3);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe(FAKE_STDOUT.trim());
    expect(JSON.parse(lines.at(-1)!)).toEqual({ status: "error", error: { code: "INSTALL_FAILED", message: expect.stringContaining("status 3") } });
    expect(r.args).toEqual(["install"]);
  });

  test("the binary's own error object is passed on alone", async () => {
    const dir = buildRelease();
    const failing = fakeBerth(LATEST).replace(`'{"status":"installed"}'`, `'{"status":"error","error":{"code":"UNSAFE_STATE","message":"x"}}'`);
    writeFileSync(join(dir, LATEST, "berth-linux-x64.gz"), gz(failing));
    writeFileSync(join(dir, LATEST, "SHA256SUMS"), `${sha256(gz(failing))}  berth-linux-x64.gz\n`);
    const r = await runInstall({ baseUrl: `file://${dir}`, env: { FAKE_BERTH_EXIT: "1" } });
    expect(r.code).toBe(1);
    expectErrorObject(r, "UNSAFE_STATE", /^x$/);
  });
});

describe("install.sh failures change nothing", () => {
  for (const downloader of DOWNLOADERS) {
    test.skipIf(!has(downloader))(`404 for the version (${downloader})`, async () => {
      const r = await runInstall({
        baseUrl: server.url,
        args: ["--release", "7.7.7", "--bootstrap"],
        env: { BERTH_DOWNLOADER: downloader },
      });
      expectFailed(r, /could not download http:\/\/127\.0\.0\.1:\d+\/7\.7\.7\/berth-linux-x64/, "DOWNLOAD_FAILED");
    });

    test.skipIf(!has(downloader))(`server down (${downloader})`, async () => {
      const s = await serveDirectory(release);
      const url = s.url;
      await s.stop();
      const r = await runInstall({ baseUrl: url, env: { BERTH_DOWNLOADER: downloader } });
      expectFailed(r, /could not download .*latest\.json/, "DOWNLOAD_FAILED");
    });
  }

  test("404 for latest.json", async () => {
    const dir = buildRelease();
    rmSync(join(dir, "latest.json"));
    const s = await serve(dir);
    const r = await runInstall({ baseUrl: s.url });
    expectFailed(r, /could not download .*latest\.json/, "DOWNLOAD_FAILED");
  });

  test("missing SHA256SUMS", async () => {
    const dir = buildRelease();
    rmSync(join(dir, LATEST, "SHA256SUMS"));
    const r = await runInstall({ baseUrl: `file://${dir}` });
    expectFailed(r, /could not download .*SHA256SUMS/, "DOWNLOAD_FAILED");
  });

  for (const tool of SHA_TOOLS) {
    test.skipIf(!has(tool))(`binary changed after SHA256SUMS was written (${tool})`, async () => {
      const dir = buildRelease();
      const tampered = fakeBerth(LATEST).replace("printf '%s\\n' '{", "printf '%s\\n' '{\"evil\":1,");
      writeFileSync(join(dir, LATEST, "berth-linux-x64.gz"), gz(tampered));
      const s = await serve(dir);
      const r = await runInstall({ baseUrl: s.url, env: { BERTH_SHA256_TOOL: tool } });
      const expected = sha256(gz(fakeBerth(LATEST)));
      const actual = sha256(gz(tampered));
      expectFailed(r, new RegExp(`checksum mismatch for berth-linux-x64\\.gz: expected ${expected}, got ${actual}`), "CHECKSUM_MISMATCH");
    });

    test.skipIf(!has(tool))(`wrong SHA256SUMS (${tool})`, async () => {
      const dir = buildRelease();
      const sums = TARGETS.map((t) => `${sha256("something else " + t)}  berth-${t}.gz`).join("\n") + "\n";
      writeFileSync(join(dir, LATEST, "SHA256SUMS"), sums);
      const r = await runInstall({ baseUrl: `file://${dir}`, env: { BERTH_SHA256_TOOL: tool } });
      expectFailed(r, /checksum mismatch for berth-linux-x64\.gz: expected [0-9a-f]{64}, got [0-9a-f]{64}/, "CHECKSUM_MISMATCH");
    });
  }

  test("SHA256SUMS without a line for the target", async () => {
    const dir = buildRelease();
    const sums = readFileSync(join(dir, LATEST, "SHA256SUMS"), "utf8")
      .split("\n")
      .filter((l) => !l.endsWith(" berth-linux-x64.gz"))
      .join("\n");
    writeFileSync(join(dir, LATEST, "SHA256SUMS"), sums);
    const r = await runInstall({ baseUrl: `file://${dir}` });
    expectFailed(r, /checksum mismatch: .*no entry for berth-linux-x64\.gz/, "CHECKSUM_MISMATCH");
  });

  test("no curl or wget", async () => {
    const s = await serve(release);
    const r = await runInstall({ baseUrl: s.url, env: { PATH: binDir([...BASE_TOOLS, "sha256sum"]) } });
    expectFailed(r, /neither curl nor wget is installed/);
    expect(s.requests).toEqual([]);
  });

  test("no SHA-256 tool", async () => {
    const s = await serve(release);
    const r = await runInstall({ baseUrl: s.url, env: { PATH: binDir([...BASE_TOOLS, "curl"]) } });
    expectFailed(r, /no SHA-256 tool found/);
    expect(s.requests).toEqual([]);
  });

  test("a forced tool that is missing or unknown", async () => {
    const path = binDir([...BASE_TOOLS, "curl", "sha256sum"]);
    let r = await runInstall({ baseUrl: server.url, env: { PATH: path, BERTH_DOWNLOADER: "wget" } });
    expectFailed(r, /BERTH_DOWNLOADER=wget but wget is not installed/);
    r = await runInstall({ baseUrl: server.url, env: { PATH: path, BERTH_SHA256_TOOL: "openssl" } });
    expectFailed(r, /BERTH_SHA256_TOOL=openssl but openssl is not installed/);
    r = await runInstall({ baseUrl: server.url, env: { BERTH_DOWNLOADER: "fetch" } });
    expectFailed(r, /must be curl or wget/);
  });

  test("an invalid BERTH_INSTALL_TARGET", async () => {
    const r = await runInstall({ baseUrl: server.url, env: { BERTH_INSTALL_TARGET: "linux-riscv64" } });
    expectFailed(r, /BERTH_INSTALL_TARGET='linux-riscv64' is not one of/);
  });
});

describe("install.sh target detection", () => {
  function expectedTarget(): string {
    const os = process.platform === "darwin" ? "darwin" : "linux";
    const arch = process.arch === "arm64" ? "arm64" : "x64";
    let musl = "";
    if (os === "linux") {
      const ldd = Bun.spawnSync(["sh", "-c", "ldd --version 2>&1"], { stdin: "ignore" });
      if (/musl/i.test(ldd.stdout.toString())) musl = "-musl";
    }
    return `${os}-${arch}${musl}`;
  }

  test("detects this machine's target for real", async () => {
    const expected = expectedTarget();
    if (process.platform === "linux" && process.arch === "x64" && expected === "linux-x64") {
      // the CI machine this suite was written for
      expect(expected).toBe("linux-x64");
    }
    const printed = await runInstall({ args: ["--print-target"], env: { BERTH_INSTALL_TARGET: undefined } });
    expect(printed.code).toBe(0);
    expect(printed.stdout).toBe(`${expected}\n`);

    const s = await serve(release);
    const r = await runInstall({ baseUrl: s.url, env: { BERTH_INSTALL_TARGET: undefined } });
    expectInstalled(r, LATEST, ["install"]);
    expect(s.requests).toContain(`/${LATEST}/berth-${expected}.gz`);
  });

  const uname = (s: string, m: string) => `case "$1" in -s) echo '${s}' ;; -m) echo '${m}' ;; *) echo '${s}' ;; esac`;
  const GLIBC_LDD = "echo 'ldd (GNU libc) 2.36'";
  const MUSL_LDD = "echo 'musl libc (x86_64)' >&2; echo 'Version 1.2.4' >&2; exit 1";
  const cases: { name: string; fakes: Record<string, string>; target: string | RegExp }[] = [
    { name: "Linux x86_64 glibc", fakes: { uname: uname("Linux", "x86_64"), ldd: GLIBC_LDD }, target: "linux-x64" },
    { name: "Linux aarch64 glibc", fakes: { uname: uname("Linux", "aarch64"), ldd: GLIBC_LDD }, target: "linux-arm64" },
    { name: "Linux x86_64 musl", fakes: { uname: uname("Linux", "x86_64"), ldd: MUSL_LDD }, target: "linux-x64-musl" },
    { name: "Linux arm64 musl", fakes: { uname: uname("Linux", "arm64"), ldd: MUSL_LDD }, target: "linux-arm64-musl" },
    { name: "Darwin arm64", fakes: { uname: uname("Darwin", "arm64"), sysctl: "echo 0" }, target: "darwin-arm64" },
    { name: "Darwin x86_64", fakes: { uname: uname("Darwin", "x86_64"), sysctl: "echo 0" }, target: "darwin-x64" },
    {
      name: "Darwin x86_64 under Rosetta",
      fakes: { uname: uname("Darwin", "x86_64"), sysctl: "echo 1" },
      target: "darwin-arm64",
    },
    {
      name: "Darwin x86_64 without sysctl.proc_translated",
      fakes: { uname: uname("Darwin", "x86_64"), sysctl: "echo 'unknown oid' >&2; exit 1" },
      target: "darwin-x64",
    },
    { name: "FreeBSD", fakes: { uname: uname("FreeBSD", "amd64") }, target: /unsupported platform 'FreeBSD amd64'/ },
    { name: "Linux riscv64", fakes: { uname: uname("Linux", "riscv64") }, target: /unsupported platform 'Linux riscv64'/ },
    { name: "Linux armv7l", fakes: { uname: uname("Linux", "armv7l") }, target: /unsupported platform 'Linux armv7l'/ },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.target}`, async () => {
      const path = `${binDir([], c.fakes)}:${SYSTEM_PATH}`;
      const env = { PATH: path, BERTH_INSTALL_TARGET: undefined };
      if (typeof c.target === "string") {
        const r = await runInstall({ args: ["--print-target"], env });
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe(`${c.target}\n`);
        expect(r.code).toBe(0);
      } else {
        const s = await serve(release);
        const r = await runInstall({ baseUrl: s.url, env });
        expectFailed(r, c.target, "UNSUPPORTED_PLATFORM");
        expect(s.requests).toEqual([]);
      }
    });
  }
});

describe("install.sh release signatures", () => {
  const KEY_A = newKey();
  const KEY_B = newKey();
  const KEYS_PLACEHOLDER = "__BERTH_PUBLIC_KEYS__";
  const opensslVerifies = (() => {
    const help = Bun.spawnSync(["sh", "-c", "openssl pkeyutl -help 2>&1"], { stdin: "ignore" }).stdout.toString();
    return has("openssl") && help.includes("-rawin");
  })();

  /** install.sh with these keys written in, as build.ts does. */
  function scriptTrusting(keys: TestKey[]): string {
    const dir = tempDir("keyed");
    const text = readFileSync(SCRIPT, "utf8");
    expect(text.split(KEYS_PLACEHOLDER)).toHaveLength(2);
    writeFileSync(join(dir, "install.sh"), text.replace(KEYS_PLACEHOLDER, keys.map((k) => k.spki).join(" ")));
    return join(dir, "install.sh");
  }

  /** A release whose manifests (one asset per line, as build.ts writes them) are signed with `key`. */
  function signedRelease(key: TestKey): string {
    const dir = buildRelease();
    for (const version of [LATEST, OLDER]) {
      const assets = TARGETS.map((target) => {
        const body = gz(fakeBerth(version));
        return JSON.stringify({ target, file: `berth-${target}.gz`, sha256: sha256(body), size: body.byteLength, binarySha256: sha256(fakeBerth(version)), binarySize: fakeBerth(version).length });
      });
      writeSigned(join(dir, version, "manifest.json"), `{"version":"${version}","assets":[\n${assets.join(",\n")}\n]}\n`, key);
    }
    return dir;
  }

  const signedShells = SHELLS.filter((sh) => ["dash", "busybox sh"].includes(sh.name));
  for (const shell of signedShells) {
    const skip = !opensslVerifies || !has(shell.cmd[0]!);
    test.skipIf(skip)(`${shell.name}: a manifest signed by a trusted key installs; A+B trusted accepts B`, async () => {
      const s = await serve(signedRelease(KEY_A));
      const r = await runInstall({ shell: shell.cmd, baseUrl: s.url, script: scriptTrusting([KEY_A]) });
      expectInstalled(r, LATEST, ["install"]);
      expect(r.stderr).not.toContain("note:");
      expect(s.requests).toEqual(["/latest.json", `/${LATEST}/manifest.json`, `/${LATEST}/manifest.json.sig`, `/${LATEST}/berth-linux-x64.gz`, `/${LATEST}/SHA256SUMS`]);
      const both = await runInstall({ shell: shell.cmd, baseUrl: `file://${signedRelease(KEY_B)}`, script: scriptTrusting([KEY_A, KEY_B]) });
      expectInstalled(both, LATEST, ["install"]);
    });

    const refusals: { name: string; make: () => string; message: RegExp; code?: string }[] = [
      { name: "signed with an untrusted key", make: () => signedRelease(KEY_B), message: /signature check failed: .*manifest\.json is not signed by a key this installer trusts/ },
      {
        name: "a manifest edited after signing",
        make: () => {
          const dir = signedRelease(KEY_A);
          const path = join(dir, LATEST, "manifest.json");
          writeFileSync(path, readFileSync(path, "utf8").replace(/"sha256":"[0-9a-f]{64}"/, `"sha256":"${"1".repeat(64)}"`));
          return dir;
        },
        message: /is not signed by a key this installer trusts/,
      },
      {
        name: "a truncated signature",
        make: () => {
          const dir = signedRelease(KEY_A);
          const path = join(dir, LATEST, "manifest.json.sig");
          writeFileSync(path, readFileSync(path, "utf8").slice(0, 40));
          return dir;
        },
        message: /manifest\.json\.sig is not a base64 Ed25519 signature/,
      },
      {
        name: "a missing .sig",
        make: () => {
          const dir = signedRelease(KEY_A);
          rmSync(join(dir, LATEST, "manifest.json.sig"));
          return dir;
        },
        message: /signature check failed: could not download .*manifest\.json\.sig/,
      },
      {
        name: "another version's signed manifest",
        make: () => {
          const dir = signedRelease(KEY_A);
          for (const f of ["manifest.json", "manifest.json.sig"]) writeFileSync(join(dir, LATEST, f), readFileSync(join(dir, OLDER, f)));
          return dir;
        },
        message: new RegExp(`signed manifest at .* is for version '${OLDER.replace(/\./g, "\\.")}', not ${LATEST.replace(/\./g, "\\.")}`),
      },
      {
        name: "SHA256SUMS disagreeing with the signed manifest",
        make: () => {
          const dir = signedRelease(KEY_A);
          const other = gz(fakeBerth(LATEST) + "# swapped\n");
          writeFileSync(join(dir, LATEST, "berth-linux-x64.gz"), other);
          writeFileSync(join(dir, LATEST, "SHA256SUMS"), `${sha256(other)}  berth-linux-x64.gz\n`);
          return dir;
        },
        message: /SHA256SUMS of release .* disagrees with its signed manifest/,
        code: "CHECKSUM_MISMATCH",
      },
    ];
    for (const refusal of refusals) {
      test.skipIf(skip)(`${shell.name}: ${refusal.name} → refused before anything downloaded runs`, async () => {
        const r = await runInstall({ shell: shell.cmd, baseUrl: `file://${refusal.make()}`, script: scriptTrusting([KEY_A]), args: ["--bootstrap"] });
        expectFailed(r, refusal.message, refusal.code ?? "SIGNATURE_INVALID");
      });
    }
  }

  test("without an openssl that verifies Ed25519 it says on stderr that it relied on HTTPS and SHA-256", async () => {
    const path = binDir([...BASE_TOOLS, "sha256sum", "curl"]);
    const r = await runInstall({ baseUrl: `file://${signedRelease(KEY_B)}`, script: scriptTrusting([KEY_A]), env: { PATH: path } });
    expectInstalled(r, LATEST, ["install"]);
    expect(r.stderr).toContain("berth-install: note: no openssl with Ed25519 here; the release signature was not checked, relying on HTTPS and SHA-256 only.");
  });
});
