/**
 * Where src/platform/sys.ts once answered differently from node:fs in a way a caller of it depends on
 * (each case failed before its fix). test/sys.test.ts compares the common calls; this file holds the
 * cases found by attacking the layer: text decoding, concurrent folder creation, the node:fs fallback,
 * and the rare answers of the C library (statx refused, close interrupted, readdir failing), made to
 * happen every time by a seccomp filter (test/fixtures/seccomp-errno.ts).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import * as nodeFs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../src/platform/sys.ts";
import { readStateFile } from "../src/platform/fs.ts";
import { processArgv, processEnvValue } from "../src/platform/process.ts";
import { BUN, MAIN, ROOT, TARGET, berthEnv, homesPerTest, runProcess, type RunResult } from "./helpers/berth.ts";

/** How long child processes of one test may take (a loaded 2-core machine). */
const CHILDREN_WAIT_MS = 30_000;
/** How long a spawned child may take to show its environment in /proc. */
const CHILD_VISIBLE_WAIT_MS = 10_000;
const SECCOMP_FIXTURE = join(ROOT, "test", "fixtures", "seccomp-errno.ts");
/** Module paths as a generated script imports them. */
const SYS_MODULE = JSON.stringify(join(ROOT, "src/platform/sys.ts"));
const SECCOMP_MODULE = JSON.stringify(SECCOMP_FIXTURE);
/** The seccomp fixture: Linux with glibc (it loads libc.so.6), x64 or arm64 (its system call numbers). */
const SECCOMP_RUNS = process.platform === "linux" && !TARGET.endsWith("-musl") && (process.arch === "x64" || process.arch === "arm64");
const EPERM = 1;
const EINTR = 4;
const EIO = 5;

let dir: string;
beforeAll(() => {
  dir = nodeFs.mkdtempSync(join(tmpdir(), "berth-sys-parity-"));
});
afterAll(() => nodeFs.rmSync(dir, { recursive: true, force: true }));

/** "ok", or the error's code and syscall. */
function outcome(call: () => unknown): unknown {
  try {
    call();
    return "ok";
  } catch (error) {
    const e = error as { code?: string; syscall?: string };
    return { code: e.code, syscall: e.syscall };
  }
}

/** Writes `source` as a script in the test folder and runs it with Bun, behind `prefix` (the seccomp fixture) when given. */
async function runScript(name: string, source: string, options: { prefix?: string[]; args?: string[] } = {}): Promise<RunResult> {
  const script = join(dir, name);
  nodeFs.writeFileSync(script, source);
  return runProcess([...(options.prefix ?? []), BUN, script, ...(options.args ?? [])], { PATH: process.env.PATH ?? "/usr/bin:/bin" }, CHILDREN_WAIT_MS);
}

/** The JSON line of a script that must end well and say nothing on stderr. */
function cleanJson(result: RunResult): unknown {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
  return result.json;
}

describe("UTF-8 text keeps a leading byte-order mark, as node:fs's readFileSync and Buffer do", () => {
  const BOM = [0xef, 0xbb, 0xbf];

  test("readFileSync and utf8Text", () => {
    const path = join(dir, "bom");
    nodeFs.writeFileSync(path, new Uint8Array([...BOM, 0x41, 0x0a]));
    expect(sys.readFileSync(path, "utf8")).toBe(nodeFs.readFileSync(path, "utf8"));
    expect(sys.readFileSync(path, "utf8")).toBe("\uFEFFA\n");
    expect(sys.utf8Text(new Uint8Array([...BOM, 0x42]))).toBe(Buffer.from([...BOM, 0x42]).toString("utf8"));
  });

  test("a state file starting with a BOM is not valid JSON (STATE_CORRUPT), whichever layer reads it", () => {
    const path = join(dir, "record.json");
    nodeFs.writeFileSync(path, new Uint8Array([...BOM, ...new TextEncoder().encode('{"pid":1}\n')]), { mode: 0o600 });
    expect(readStateFile(path)).toBe(nodeFs.readFileSync(path, "utf8"));
    expect(() => JSON.parse(readStateFile(path) as string)).toThrow();
  });

  test("a process whose first environment entry starts with a BOM does not have BERTH_HOME (orphan search)", async () => {
    // findUpdateLoops trusts processEnvValue(pid, "BERTH_HOME") to prove a process is ours before signalling it.
    const home = join(dir, "home");
    const child = Bun.spawn(["sh", "-c", "sleep 60; :", "update-loop"], { env: { "\uFEFFBERTH_HOME": home, PATH: process.env.PATH ?? "/usr/bin:/bin" }, stdio: ["ignore", "ignore", "ignore"] });
    try {
      const deadline = Date.now() + CHILD_VISIBLE_WAIT_MS;
      while (!(processArgv(child.pid) ?? []).includes("update-loop") && Date.now() < deadline) await Bun.sleep(10);
      const environ = nodeFs.readFileSync(`/proc/${child.pid}/environ`, "utf8");
      expect(environ.startsWith(`\uFEFFBERTH_HOME=${home}\0`)).toBe(true);
      expect(processEnvValue(child.pid, "BERTH_HOME")).toBeUndefined();
      expect(processEnvValue(child.pid, "PATH")).toBe(process.env.PATH ?? "/usr/bin:/bin");
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
  });
});

describe("mkdirSync({ recursive: true }) accepts a folder that is already there at every level, as node:fs does", () => {
  test("a path ending in /. or going through .. is made", () => {
    for (const [fs, tag] of [[nodeFs, "n"], [sys, "s"]] as const) {
      expect(outcome(() => fs.mkdirSync(join(dir, `dot-${tag}`, "new") + "/.", { recursive: true }))).toBe("ok");
      expect(outcome(() => fs.mkdirSync(`${join(dir, `up-${tag}`)}/x/../y`, { recursive: true, mode: 0o700 }))).toBe("ok");
      expect(nodeFs.statSync(join(dir, `up-${tag}`, "y")).isDirectory()).toBe(true);
    }
  });

  test("processes making the same deep folders at once all succeed", async () => {
    const base = join(dir, "race");
    nodeFs.mkdirSync(base);
    // Each process makes the same 150 chains; the others make the last folder of a chain between its parent and it.
    const source = `import { mkdirSync } from ${SYS_MODULE};
const start = Number(process.argv[2]);
while (Date.now() < start) {}
const failures = [];
for (let i = 0; i < 150; i++) {
  try { mkdirSync(${JSON.stringify(base)} + "/" + i + "/a/b/c/d", { recursive: true, mode: 0o700 }); } catch (error) { failures.push(error.code); }
}
console.log(JSON.stringify(failures));
`;
    const start = String(Date.now() + 1_000);
    const results = await Promise.all(Array.from({ length: 4 }, (_, i) => runScript(`race-${i}.ts`, source, { args: [start] })));
    expect(results.map(cleanJson)).toEqual([[], [], [], []]);
    for (let i = 0; i < 150; i++) expect(nodeFs.statSync(join(base, String(i), "a/b/c/d")).isDirectory()).toBe(true);
  }, CHILDREN_WAIT_MS);
});

describe("paths near PATH_MAX, in 1- to 4-byte characters (sys.ts encodes into a reused buffer)", () => {
  test("stat, lstat, exists, open, read and readdir fail (or not) with node:fs's codes", () => {
    // The code only: past 4095 bytes Bun refuses before any system call, with no syscall named.
    const code = (call: () => unknown) => {
      const result = outcome(call);
      return (result as { code?: string }).code ?? result;
    };
    let checked = 0;
    const encoder = new TextEncoder();
    for (const char of ["a", "é", "€", "😀"]) {
      for (let target = 4_080; target <= 4_100; target += 1) {
        // Names of at most 40 characters (under NAME_MAX in every width) until the path is about `target` bytes.
        let path = dir;
        while (encoder.encode(path).byteLength < target) {
          const left = target - encoder.encode(path).byteLength - 1;
          path += `/${char.repeat(Math.max(1, Math.min(40, Math.floor(left / encoder.encode(char).byteLength))))}`;
        }
        const calls: Array<[string, (fs: typeof sys) => unknown]> = [
          ["stat", (fs) => fs.statSync(path)],
          ["lstat", (fs) => fs.lstatSync(path, { throwIfNoEntry: false })],
          ["exists", (fs) => fs.existsSync(path)],
          ["open", (fs) => fs.openSync(path, "r")],
          ["read", (fs) => fs.readFileSync(path, "utf8")],
          ["readdir", (fs) => fs.readdirSync(path)],
        ];
        for (const [name, call] of calls) {
          const bytes = encoder.encode(path).byteLength;
          expect({ char, bytes, name, code: code(() => call(sys)) }).toEqual({ char, bytes, name, code: code(() => call(nodeFs as unknown as typeof sys)) });
          checked += 1;
        }
      }
    }
    expect(checked).toBe(4 * 21 * 6);
  });
});

describe("the node:fs fallback (BERTH_SYS_NODE_FS=1) reaches the berth processes a test runs", () => {
  test("berthEnv passes BERTH_SYS_NODE_FS on when the test run has it, and only then", () => {
    const saved = process.env.BERTH_SYS_NODE_FS;
    try {
      process.env.BERTH_SYS_NODE_FS = "1";
      expect(berthEnv(dir, join(dir, "home")).BERTH_SYS_NODE_FS).toBe("1");
      delete process.env.BERTH_SYS_NODE_FS;
      expect("BERTH_SYS_NODE_FS" in berthEnv(dir, join(dir, "home"))).toBe(false);
    } finally {
      if (saved === undefined) delete process.env.BERTH_SYS_NODE_FS;
      else process.env.BERTH_SYS_NODE_FS = saved;
    }
  });
});

describe.skipIf(!SECCOMP_RUNS)("statx refused by a seccomp filter (Docker < 18.04): stat falls back, as node:fs does", () => {
  const newHome = homesPerTest(afterEach);

  test("statSync, lstatSync and fstatSync answer as node:fs does under the filter, each as a process's first stat", async () => {
    const source = `import * as nodeFs from "node:fs";
import * as sys from ${SYS_MODULE};
const fields = (s) => s && [s.ino, s.mode, s.size, s.isDirectory(), s.isSymbolicLink()];
const calls = {
  stat: (fs) => fs.statSync(${JSON.stringify(dir)}),
  lstat: (fs) => fs.lstatSync("/proc/self"),
  fstat: (fs) => fs.fstatSync(0),
  missing: (fs) => fs.statSync(${JSON.stringify(join(dir, "missing"))}, { throwIfNoEntry: false }),
};
const call = calls[process.argv[2]];
console.log(JSON.stringify({ sys: fields(call(sys)) ?? null, node: fields(call(nodeFs)) ?? null }));
`;
    for (const name of ["stat", "lstat", "fstat", "missing"]) {
      const json = cleanJson(await runScript("stat-under-filter.ts", source, { prefix: [BUN, SECCOMP_FIXTURE, "statx", String(EPERM)], args: [name] })) as { sys: unknown; node: unknown };
      expect({ name, sys: json.sys }).toEqual({ name, sys: json.node });
    }
  }, 4 * CHILDREN_WAIT_MS);

  test("berth start, status and stop work with statx refused (the app-server inherits the filter)", async () => {
    const home = newHome();
    const run = (args: string[]) => home.exec([BUN, SECCOMP_FIXTURE, "statx", String(EPERM), BUN, MAIN, ...args], { timeoutMs: CHILDREN_WAIT_MS });
    const start = await run(["start"]);
    expect({ status: start.json?.status, stderr: start.code === 0 ? "" : start.stderr }).toEqual({ status: "started", stderr: "" });
    const status = await run(["status"]);
    expect(status.json?.appServer?.state).toBe("running");
    const stopped = await run(["stop"]);
    expect(stopped.json?.status).toBe("stopped");
  }, 3 * CHILDREN_WAIT_MS);
});

describe.skipIf(!SECCOMP_RUNS)("closeSync: EINTR from close(2) is success, as node:fs (libuv, Bun) takes it", () => {
  test("the descriptor is gone after an interrupted close: no error, so no caller closes it again", async () => {
    // Linux frees the descriptor before close(2) can say EINTR (NFS, FUSE): an error makes writeFileAtomic
    // close the number again (maybe someone else's by then) and a lock's release throw out of withLock.
    // The filter is installed in the script itself: a program exec'd under it could not even load its libraries.
    const source = `import * as nodeFs from "node:fs";
import * as sys from ${SYS_MODULE};
import { refuseSyscall } from ${SECCOMP_MODULE};
const outcome = (call) => { try { call(); return "ok"; } catch (error) { return error.code; } };
// Opened (and the C library loaded) first: from here on every close(2) of this thread says EINTR.
const fds = [sys.openSync("/dev/null", "r"), nodeFs.openSync("/dev/null", "r")];
if (!refuseSyscall("close", ${EINTR})) process.exit(97);
console.log(JSON.stringify({ sys: outcome(() => sys.closeSync(fds[0])), node: outcome(() => nodeFs.closeSync(fds[1])) }));
`;
    expect(cleanJson(await runScript("close-under-filter.ts", source))).toEqual({ sys: "ok", node: "ok" });
  }, CHILDREN_WAIT_MS);
});

describe.skipIf(!SECCOMP_RUNS)("readdirSync: a failing readdir(3) is an error, never the end of the folder", () => {
  test("EIO from getdents64 throws as node:fs throws; the /proc scans do not come back empty", async () => {
    // Before: readdir's NULL was always "the end", so listProcesses (stop's tree snapshot) saw no process at all.
    const source = `import * as nodeFs from "node:fs";
import * as sys from ${SYS_MODULE};
import { listPids, listProcesses } from ${JSON.stringify(join(ROOT, "src/platform/process.ts"))};
import { refuseSyscall } from ${SECCOMP_MODULE};
const outcome = (call) => { try { return "ok: " + call().length; } catch (error) { return error.code + " " + error.syscall; } };
const before = listPids().length > 0 && listProcesses().length > 0;
// From here on every getdents64 of this thread says EIO (a failing disk, a broken network folder).
if (!refuseSyscall("getdents64", ${EIO})) process.exit(97);
console.log(JSON.stringify({ before, sys: outcome(() => sys.readdirSync("/proc")), node: outcome(() => nodeFs.readdirSync("/proc")), pids: outcome(listPids), processes: outcome(listProcesses) }));
`;
    const failed = "EIO scandir";
    expect(cleanJson(await runScript("readdir-under-filter.ts", source))).toEqual({ before: true, sys: failed, node: failed, pids: failed, processes: failed });
  }, CHILDREN_WAIT_MS);
});
