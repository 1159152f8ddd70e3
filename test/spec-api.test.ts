// Rules of SPEC.md "The app-server API" that no other test pins down, each
// against a real `berth serve` in a temporary BERTH_HOME: signals go to the
// process group, the process object's optional fields, the processes.*
// defaults as the server applies them, notifications only to the connection
// that asked, whole-file writes by rename, link targets that are not UTF-8,
// and the 4 MiB read a call returns by default.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, isAlive, makeHome, type TestHome } from "./helpers/berth.ts";
import { RpcClient, closeServedHome, openServedHome, startAppServer, type AppServer } from "./helpers/rpc-client.ts";

const MIB = 1024 * 1024;
const TEST_TIMEOUT_MS = 60_000;
const WAIT_MS = 15_000;
/** SPEC "Processes and terminals": the defaults of processes.scrollbackBytes and processes.max. */
const SPEC_SCROLLBACK_BYTES = 2 * MIB;
const SPEC_MAX_PROCESSES = 64;

let home: TestHome;
let server: AppServer;
let client: RpcClient;
const trees: string[] = [];

beforeAll(async () => {
  // No settings.json: every limit is the spec's default.
  ({ home, server, client } = await openServedHome("berth-spec-api-"));
}, TEST_TIMEOUT_MS);

afterAll(async () => {
  await closeServedHome({ home, server, client });
  for (const dir of trees) rmSync(dir, { recursive: true, force: true });
});

function tree(): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-spec-api-tree-"));
  trees.push(dir);
  return dir;
}

const b64 = (data: string | Uint8Array) => Buffer.from(data).toString("base64");

/** The text of `stream` that `rpc` has received for `processId` so far (process/output notifications, taken from its queue). */
function outputOf(rpc: RpcClient, processId: string, stream: string, into: { text: string }): string {
  for (let i = 0; i < rpc.notifications.length; ) {
    const n = rpc.notifications[i]!;
    if (n.method === "process/output" && n.params.processId === processId && n.params.stream === stream) {
      into.text += Buffer.from(n.params.data, "base64").toString("utf8");
      rpc.notifications.splice(i, 1);
    } else i++;
  }
  return into.text;
}

async function listed(processId: string): Promise<any> {
  const { processes } = await client.call("process/list");
  return processes.find((p: { processId: string }) => p.processId === processId);
}

describe("process/*", () => {
  test("process/signal goes to the process group: a child the leader started is signalled with it (SPEC: 'to the process group')", async () => {
    const { process: p } = await client.call("process/spawn", { argv: ["sh", "-c", "sleep 1000 & echo $!; wait"] });
    const out = { text: "" };
    expect(await eventually(() => outputOf(client, p.processId, "stdout", out).endsWith("\n"), WAIT_MS)).toBe(true);
    const child = Number(out.text.trim());
    expect(child).toBeGreaterThan(1);
    expect(isAlive(child)).toBe(true);
    const { delivered } = await client.call("process/signal", { processId: p.processId, signal: "SIGTERM" });
    expect(delivered).toBe(true);
    // Signalled alone, the leader would die and leave its sleep running for 1000 s.
    expect(await eventually(() => !isAlive(child), WAIT_MS)).toBe(true);
    expect(await eventually(async () => (await listed(p.processId))?.state === "exited", WAIT_MS)).toBe(true);
    expect(await listed(p.processId)).toMatchObject({ exitCode: null, signal: "SIGTERM" });
  }, TEST_TIMEOUT_MS);

  test("the process object: startedAt always; exitCode, signal and exitedAt only once exited (SPEC: exitCode?, signal?, exitedAt?)", async () => {
    const before = Date.now();
    const { process: p } = await client.call("process/spawn", { argv: ["sh", "-c", "read x; exit 4"] });
    expect(new Date(p.startedAt).toISOString()).toBe(p.startedAt);
    expect(Date.parse(p.startedAt)).toBeGreaterThanOrEqual(before - 1_000);
    for (const absent of ["exitCode", "signal", "exitedAt"]) expect(p).not.toHaveProperty(absent);
    expect(Object.keys(p).sort()).toEqual(["argv", "attached", "cwd", "pid", "processId", "startedAt", "state", "streams", "terminal"]);
    await client.call("process/write", { processId: p.processId, data: b64("go\n") });
    expect(await eventually(async () => (await listed(p.processId))?.state === "exited", WAIT_MS)).toBe(true);
    const exited = await listed(p.processId);
    expect(exited).toMatchObject({ state: "exited", exitCode: 4, signal: null, startedAt: p.startedAt });
    expect(new Date(exited.exitedAt).toISOString()).toBe(exited.exitedAt);
    expect(Date.parse(exited.exitedAt)).toBeGreaterThanOrEqual(Date.parse(p.startedAt));
    await client.call("process/remove", { processId: p.processId });
  }, TEST_TIMEOUT_MS);

  test("without argv: the login shell system/info names — $SHELL when set (SPEC: '$SHELL -l'), else the user's passwd entry", async () => {
    // This server's environment has no SHELL (test/helpers/berth.ts berthEnv).
    const info = await client.call("system/info");
    const { process: p } = await client.call("process/spawn", { argv: undefined });
    expect(p.argv).toEqual([info.shell, "-l"]);
    await client.call("process/signal", { processId: p.processId, signal: "SIGKILL" });

    const own = makeHome({ install: false, prefix: "berth-spec-api-" });
    own.env.SHELL = "/bin/dash";
    const withShell = await startAppServer(own);
    try {
      const rpc = await RpcClient.open(withShell.socket);
      expect((await rpc.call("system/info")).shell).toBe("/bin/dash");
      const { process: q } = await rpc.call("process/spawn", {});
      expect(q.argv).toEqual(["/bin/dash", "-l"]);
      await rpc.call("process/signal", { processId: q.processId, signal: "SIGKILL" });
      rpc.destroy();
    } finally {
      await withShell.stop();
      await own.cleanup();
    }
  }, TEST_TIMEOUT_MS);

  test(`with no settings, ${SPEC_SCROLLBACK_BYTES} bytes are kept per stream (SPEC: scrollbackBytes default 2 MiB)`, async () => {
    const total = 3 * MIB;
    const { process: p } = await client.call("process/spawn", { argv: ["sh", "-c", `read go; head -c ${total} /dev/zero; read done`] });
    await client.call("process/detach", { processId: p.processId });
    await client.call("process/write", { processId: p.processId, data: b64("go\n") });
    expect(await eventually(async () => (await listed(p.processId))?.streams.stdout.end === total, WAIT_MS)).toBe(true);
    expect((await listed(p.processId)).streams.stdout).toEqual({ start: total - SPEC_SCROLLBACK_BYTES, end: total });
    await client.call("process/signal", { processId: p.processId, signal: "SIGKILL" });
  }, TEST_TIMEOUT_MS);

  test(`with no settings, at most ${SPEC_MAX_PROCESSES} processes run (SPEC: max default 64); the next spawn is -32001`, async () => {
    const ids: string[] = [];
    try {
      // Processes of earlier tests must have ended, or one ending meanwhile would free a place.
      const noneRunning = async () => (await client.call("process/list")).processes.every((p: { state: string }) => p.state !== "running");
      expect(await eventually(noneRunning, WAIT_MS)).toBe(true);
      for (let i = 0; i < SPEC_MAX_PROCESSES; i++) ids.push((await client.call("process/spawn", { argv: ["sleep", "1000"] })).process.processId);
      const refused = await client.callError("process/spawn", { argv: ["sleep", "1000"] });
      expect(refused.code).toBe(-32001);
      expect(refused.message).toContain("processes.max");
    } finally {
      for (const processId of ids) await client.call("process/signal", { processId, signal: "SIGKILL" });
    }
  }, TEST_TIMEOUT_MS);
});

describe("when the app-server stops (SPEC: 'send SIGHUP to terminal sessions and SIGTERM to other groups')", () => {
  test("a terminal process is hung up, a piped one terminated", async () => {
    const own = makeHome({ install: false, prefix: "berth-spec-api-" });
    const stopping = await startAppServer(own);
    try {
      const rpc = await RpcClient.open(stopping.socket);
      const dir = tree();
      const script = (file: string) => `trap 'echo HUP >> ${file}; exit 0' HUP; trap 'echo TERM >> ${file}; exit 0' TERM; echo ready; while :; do sleep 0.1; done`;
      const terminal = (await rpc.call("process/spawn", { argv: ["sh", "-c", script(join(dir, "terminal"))], terminal: { cols: 80, rows: 24 } })).process;
      const piped = (await rpc.call("process/spawn", { argv: ["sh", "-c", script(join(dir, "piped"))] })).process;
      const seen = { terminal: { text: "" }, piped: { text: "" } };
      expect(await eventually(() => outputOf(rpc, terminal.processId, "terminal", seen.terminal).includes("ready"), WAIT_MS)).toBe(true);
      expect(await eventually(() => outputOf(rpc, piped.processId, "stdout", seen.piped).includes("ready"), WAIT_MS)).toBe(true);
      rpc.destroy();
      await stopping.stop(); // SIGTERM: the server ends its processes on its way out
      expect([terminal.pid, piped.pid].filter(isAlive)).toEqual([]);
      // The first signal each saw (a later HUP from the pty closing would come second).
      const first = (file: string) => (existsSync(file) ? readFileSync(file, "utf8").split("\n")[0] : "none");
      expect({ terminal: first(join(dir, "terminal")), piped: first(join(dir, "piped")) }).toEqual({ terminal: "HUP", piped: "TERM" });
    } finally {
      await stopping.stop();
      await own.cleanup();
    }
  }, TEST_TIMEOUT_MS);
});

describe("notifications go only to the connections that asked for them", () => {
  test("another connection gets no fs/changed of a watch it did not make, no output of a process it did not attach, and cannot unwatch", async () => {
    const other = await RpcClient.open(server.socket);
    try {
      const watched = tree();
      const { watchId } = await client.call("fs/watch", { path: watched });
      const { process: p } = await client.call("process/spawn", { argv: ["sh", "-c", "echo from-the-process"] });
      writeFileSync(join(watched, "f"), "x");
      await client.waitNotification("fs/changed", (n) => n.watchId === watchId, WAIT_MS);
      await client.waitNotification("process/exited", (n) => n.processId === p.processId, WAIT_MS);
      // Not its watch: refused, and the watch keeps reporting to its own connection.
      expect((await other.callError("fs/unwatch", { watchId })).code).toBe(-32004);
      writeFileSync(join(watched, "g"), "x");
      await client.waitNotification("fs/changed", (n) => n.watchId === watchId && n.changes.some((c: any) => c.path === join(watched, "g")), WAIT_MS);
      // A reply to `other` comes after anything the server had queued for it.
      await other.call("system/info");
      expect(other.notifications).toEqual([]);
      await client.call("fs/unwatch", { watchId });
    } finally {
      other.destroy();
    }
  }, TEST_TIMEOUT_MS);
});

describe("fs/*", () => {
  test("a whole-file write replaces the file by rename (a new inode, readers of the old one unaffected); an append writes in place", async () => {
    const root = tree();
    const path = join(root, "f.txt");
    writeFileSync(path, "old");
    const before = statSync(path).ino;
    await client.call("fs/writeFile", { path, data: b64("new") });
    const after = statSync(path).ino;
    expect(after).not.toBe(before);
    await client.call("fs/writeFile", { path, data: b64("+"), append: true });
    expect(statSync(path).ino).toBe(after);
    expect(readdirSync(root)).toEqual(["f.txt"]);
  });

  test("a symlink target that is not UTF-8 comes as targetBase64 beside a replacement-character target (SPEC: paths given back use the same rule)", async () => {
    const root = tree();
    const raw = Buffer.from([0x74, 0xff, 0x2f, 0x78]); // "t", invalid, "/x"
    symlinkSync(raw, join(root, "link"));
    expect(await client.call("fs/getMetadata", { path: join(root, "link") })).toMatchObject({
      type: "symlink",
      target: "t\uFFFD/x",
      targetBase64: raw.toString("base64"),
    });
    symlinkSync("plain", join(root, "plain-link"));
    expect(await client.call("fs/getMetadata", { path: join(root, "plain-link") })).not.toHaveProperty("targetBase64");
  });

  test("a burst of changes is coalesced: one fs/changed names each path once, not one notification per event (SPEC: coalesced over 50 ms)", async () => {
    const root = tree();
    const [a, b, marker] = [join(root, "a"), join(root, "b"), join(root, "marker")];
    writeFileSync(a, "");
    writeFileSync(b, "");
    const { watchId } = await client.call("fs/watch", { path: root });
    const batches: any[] = [];
    client.on("fs/changed", (params) => {
      if (params.watchId === watchId) batches.push(params);
    });
    try {
      // Alternating files: the kernel merges identical consecutive inotify events, not these.
      for (let i = 0; i < 20; i++) writeFileSync(i % 2 === 0 ? a : b, String(i), { flag: "a" });
      // Events arrive in order: once the marker is reported, every write before it has been.
      writeFileSync(marker, "");
      expect(await eventually(() => batches.some((batch) => batch.changes.some((c: any) => c.path === marker)), WAIT_MS)).toBe(true);
      const reports = batches.flatMap((batch) => batch.changes.filter((c: any) => c.path === a || c.path === b));
      expect(reports.length).toBeGreaterThanOrEqual(2);
      // 20 events; unbatched they would be 20 notifications. A loaded machine may split the burst once or twice.
      expect(batches.length).toBeLessThanOrEqual(4);
      for (const batch of batches) expect(new Set(batch.changes.map((c: any) => c.path)).size).toBe(batch.changes.length);
    } finally {
      client.on("fs/changed", (params) => client.notifications.push({ method: "fs/changed", params })); // as without a handler
      await client.call("fs/unwatch", { watchId });
    }
  }, TEST_TIMEOUT_MS);

  test("fs/readFile without a length returns at most 4 MiB (SPEC: at most 4 MiB a call)", async () => {
    const root = tree();
    const path = join(root, "big");
    writeFileSync(path, Buffer.alloc(5 * MIB, 0x61));
    const first = await client.call("fs/readFile", { path });
    expect(Buffer.from(first.data, "base64").length).toBe(4 * MIB);
    expect(first).toMatchObject({ size: 5 * MIB, eof: false });
    const rest = await client.call("fs/readFile", { path, offset: 4 * MIB });
    expect(Buffer.from(rest.data, "base64").length).toBe(MIB);
    expect(rest).toMatchObject({ size: 5 * MIB, eof: true });
  }, TEST_TIMEOUT_MS);
});
