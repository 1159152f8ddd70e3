/**
 * berth where the C library's rare answers happen every time, made so by a seccomp filter
 * (test/fixtures/seccomp-errno.ts), and a /proc entry made to look like ours. Each case once failed
 * with the FFI file layer (src/platform/sys.ts, since reverted) and holds with node:fs; they guard
 * whatever does berth's file calls:
 * - statx refused (EPERM, as Docker < 18.04 answers): every stat must fall back to stat(2);
 * - a /proc listing that fails (EIO): an error, never an empty scan before stop signals a tree;
 * - an environment entry that starts with a byte-order mark is not BERTH_HOME (UTF-8 text keeps the BOM).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { processArgv, processEnvValue } from "../src/platform/process.ts";
import { BUN, MAIN, ROOT, TARGET, homesPerTest, runProcess } from "./helpers/berth.ts";

/** How long one child process (a berth command, a script) may take on a loaded 2-core machine. */
const CHILD_WAIT_MS = 30_000;
/** How long a spawned child may take to show its command line in /proc. */
const CHILD_VISIBLE_WAIT_MS = 10_000;
const SECCOMP_FIXTURE = join(ROOT, "test", "fixtures", "seccomp-errno.ts");
/** The seccomp fixture: Linux with glibc (it loads libc.so.6), x64 or arm64 (its system call numbers). */
const SECCOMP_RUNS = process.platform === "linux" && !TARGET.endsWith("-musl") && (process.arch === "x64" || process.arch === "arm64");
const EPERM = 1;
const EIO = 5;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "berth-hostile-syscalls-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!SECCOMP_RUNS)("statx refused by a seccomp filter (Docker < 18.04, libseccomp < 2.3.3)", () => {
  const newHome = homesPerTest(afterEach);

  test("berth start, status and stop work (the app-server inherits the filter)", async () => {
    const home = newHome();
    const run = (args: string[]) => home.exec([BUN, SECCOMP_FIXTURE, "statx", String(EPERM), BUN, MAIN, ...args], { timeoutMs: CHILD_WAIT_MS });
    const start = await run(["start"]);
    expect({ status: start.json?.status, stderr: start.code === 0 ? "" : start.stderr }).toEqual({ status: "started", stderr: "" });
    const status = await run(["status"]);
    expect(status.json?.appServer?.state).toBe("running");
    const stopped = await run(["stop"]);
    expect(stopped.json?.status).toBe("stopped");
  }, 3 * CHILD_WAIT_MS);
});

describe.skipIf(!SECCOMP_RUNS)("a /proc listing that fails (getdents64: EIO)", () => {
  test("listPids and listProcesses throw the error: stop's tree snapshot is never an empty scan", async () => {
    const script = join(dir, "scan-under-filter.ts");
    writeFileSync(
      script,
      `import { listPids, listProcesses } from ${JSON.stringify(join(ROOT, "src/platform/process.ts"))};
import { refuseSyscall } from ${JSON.stringify(SECCOMP_FIXTURE)};
const outcome = (call) => { try { return "ok: " + call().length; } catch (error) { return error.code; } };
const before = listPids().length > 0 && listProcesses().length > 0;
// From here on every getdents64 of this thread says EIO.
if (!refuseSyscall("getdents64", ${EIO})) process.exit(97);
console.log(JSON.stringify({ before, pids: outcome(listPids), processes: outcome(listProcesses) }));
`,
    );
    const result = await runProcess([BUN, script], { PATH: process.env.PATH ?? "/usr/bin:/bin" }, CHILD_WAIT_MS);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
    expect(result.json).toEqual({ before: true, pids: "EIO", processes: "EIO" });
  }, CHILD_WAIT_MS);
});

describe.skipIf(process.platform !== "linux")("an environment entry that starts with a byte-order mark", () => {
  test("is not BERTH_HOME: the orphan search never takes such a process for ours", async () => {
    // findUpdateLoops trusts processEnvValue(pid, "BERTH_HOME") to prove a process is ours before signalling it.
    const home = join(dir, "home");
    const child = Bun.spawn(["sh", "-c", "sleep 60; :", "update-loop"], { env: { "\uFEFFBERTH_HOME": home, PATH: process.env.PATH ?? "/usr/bin:/bin" }, stdio: ["ignore", "ignore", "ignore"] });
    try {
      const deadline = Date.now() + CHILD_VISIBLE_WAIT_MS;
      while (!(processArgv(child.pid) ?? []).includes("update-loop") && Date.now() < deadline) await Bun.sleep(10);
      expect(readFileSync(`/proc/${child.pid}/environ`, "utf8").startsWith(`\uFEFFBERTH_HOME=${home}\0`)).toBe(true);
      expect(processEnvValue(child.pid, "BERTH_HOME")).toBeUndefined();
      expect(processEnvValue(child.pid, "PATH")).toBe(process.env.PATH ?? "/usr/bin:/bin");
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
  });
});
