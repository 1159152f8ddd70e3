/**
 * berth runs with umask 077 (its state is private), but users' processes create files as their ssh session
 * would: with the umask of whoever ran the berth command that started the app-server. Before, a user's
 * `touch f` in a berth terminal made a 0600 file where the same command over ssh made a 0644 one.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { parseUmask, USER_UMASK_ENV } from "../src/platform/inherited.ts";
import { BUN, MAIN, homesPerTest, tempDirsPerTest, type TestHome } from "./helpers/berth.ts";
import { apiClient, call, OutputCollector } from "./helpers/session.ts";

const newHome = homesPerTest(afterEach);
const tempDir = tempDirsPerTest(afterEach, "berth-umask-");

describe("BERTH_USER_UMASK as berth reads it (pure)", () => {
  const cases: Array<{ text: string | undefined; umask: number | undefined }> = [
    { text: "22", umask: 0o022 },
    { text: "0022", umask: 0o022 },
    { text: "0", umask: 0 },
    { text: "777", umask: 0o777 },
    { text: "1777", umask: undefined },
    { text: "8", umask: undefined },
    { text: "-22", umask: undefined },
    { text: "", umask: undefined },
    { text: "022 ", umask: undefined },
    { text: undefined, umask: undefined },
  ];
  for (const { text, umask } of cases) test(`${JSON.stringify(text)} → ${umask?.toString(8)}`, () => expect(parseUmask(text)).toBe(umask));
});

/** `berth <args>` run by a shell with this umask, as a user's script would. */
function underUmask(home: TestHome, umask: string, args: string[]) {
  return home.exec(["sh", "-c", `umask ${umask}; exec "$@"`, "sh", BUN, MAIN, ...args]);
}

/** What a user's process reports of its umask, of a file it creates, and whether it sees BERTH_USER_UMASK. */
async function userProcessFacts(home: TestHome, terminal: boolean): Promise<string> {
  const folder = tempDir();
  const ws = await apiClient(home.path("daemon", "app-server.sock"));
  try {
    const out = new OutputCollector(ws);
    const script = `umask; touch f; mkdir d; stat -c %a f d | tr '\\n' ' '; echo; echo "env=\${${USER_UMASK_ENV}-unset}"`;
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", script], cwd: folder, ...(terminal ? { terminal: { cols: 80, rows: 24 } } : {}) });
    expect(await out.waitExited(p.processId)).toEqual({ exitCode: 0, signal: null });
    return out.text(p.processId, terminal ? "terminal" : "stdout").replaceAll("\r", "");
  } finally {
    ws.destroy();
  }
}

function umaskOf(pid: number): string | undefined {
  return /^Umask:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, "latin1"))?.[1];
}

describe.skipIf(process.platform !== "linux")("users' processes get the umask berth was started with", () => {
  test("started under umask 022: the user's files are 0644 (pipes and terminal), the app-server keeps 077", async () => {
    const home = newHome();
    const started = await underUmask(home, "022", ["start"]);
    expect(started.json.status).toBe("started");
    expect(umaskOf(started.json.pid)).toBe("0077");
    for (const terminal of [false, true]) {
      expect({ terminal, facts: await userProcessFacts(home, terminal) }).toEqual({ terminal, facts: "0022\n644 755 \nenv=unset\n" });
    }
    // berth's own state stays private.
    expect(umaskOf(started.json.pid)).toBe("0077");
  }, 60_000);

  test("a restart under another umask hands that one on", async () => {
    const home = newHome();
    expect((await underUmask(home, "022", ["start"])).json.status).toBe("started");
    expect((await underUmask(home, "027", ["restart"])).json.status).toBe("restarted");
    expect(await userProcessFacts(home, false)).toBe("0027\n640 750 \nenv=unset\n");
  }, 60_000);
});
