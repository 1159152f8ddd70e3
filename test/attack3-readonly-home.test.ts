/**
 * A BERTH_HOME remounted read-only while the app-server runs (EROFS): `stop` must still stop it the way it
 * always does, gracefully: the server ends its sessions (SIGTERM to each group) and exits on its own. Its
 * shutdown threw on the socket it could not remove before it ended anything, so it hung until the stop's
 * SIGKILL after stopGraceMs. Staged with a read-only bind mount over the home: needs root.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, homesPerTest, isAlive } from "./helpers/berth.ts";
import { remountReadOnly } from "./helpers/mount.ts";
import { apiClient, call } from "./helpers/session.ts";

const TEST_TIMEOUT_MS = 90_000;
/** Short, so that a server that cannot shut down on its own is killed well inside the test (and the test fails). */
const STOP_GRACE_MS = 10_000;

const canMount = process.getuid?.() === 0 && process.platform === "linux" && Bun.which("mount") !== null;

// Registered first so that it runs first: the homes are removed once the bind mounts are gone.
const unmounts: string[] = [];
afterEach(() => {
  for (const path of unmounts.splice(0)) Bun.spawnSync(["umount", "-l", path]);
});
const newHome = homesPerTest(afterEach);

describe.skipIf(!canMount)("a BERTH_HOME that became read-only", () => {
  test("stop ends the sessions through the server's own shutdown, and the server exits by itself", async () => {
    const home = newHome({ settings: { stopGraceMs: STOP_GRACE_MS } });
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    const pid = started.json.pid as number;
    // A session that says it was asked to end (outside the home, which will be read-only).
    const marker = join(home.env.HOME as string, "session-ended");
    const ws = await apiClient(started.json.socketPath);
    const { process: session } = await call(ws, "process/spawn", { argv: ["sh", "-c", `trap 'echo TERM >"${marker}"; exit 0' TERM; while :; do sleep 0.1; done`] });
    ws.destroy();

    expect(Bun.spawnSync(["mount", "--bind", home.home, home.home]).exitCode).toBe(0);
    unmounts.push(home.home);
    // The keeper's first steps write their verdicts and logs just after start: the remount waits them out.
    expect(await remountReadOnly(home.home)).toMatchObject({ readOnly: true });

    const stop = await home.run(["stop"]);
    expect(stop.json.status).toBe("stopped");
    expect(await eventually(() => !isAlive(pid) && !isAlive(session.pid as number))).toBe(true);
    // Ended by the server's SIGTERM, not by the stop's SIGKILL after the grace.
    expect(existsSync(marker) ? readFileSync(marker, "utf8") : "no marker: the session was killed, not ended").toBe("TERM\n");
    expect(stop.json.notEnded).toBeUndefined();
  }, TEST_TIMEOUT_MS);
});

const runtimes: string[] = [];
afterEach(() => {
  for (const dir of runtimes.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!canMount)("a read-only BERTH_HOME whose socket takes the fallback folder", () => {
  test("stop still stops the app-server when daemon/socket-dir was never written (a server started before it existed)", async () => {
    const home = newHome({ prefix: "berth:ro-" });
    // Its own runtime folder (outside the home, whose ':' a socket URL cannot carry): not /tmp's.
    const runtime = mkdtempSync(join(tmpdir(), "berth-ro-run-"));
    runtimes.push(runtime);
    home.env.XDG_RUNTIME_DIR = runtime;
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    expect(started.json.socketPath.startsWith(`${runtime}/berth-`)).toBe(true);
    for (const file of ["socket-dir", "socket-dir.lock"]) rmSync(home.path("daemon", file));

    expect(Bun.spawnSync(["mount", "--bind", home.home, home.home]).exitCode).toBe(0);
    unmounts.push(home.home);
    expect(await remountReadOnly(home.home)).toMatchObject({ readOnly: true });
    const stop = await home.run(["stop"]);
    expect(stop.json).toMatchObject({ status: "stopped", socketPath: started.json.socketPath });
    expect(await eventually(() => !isAlive(started.json.pid as number))).toBe(true);
  }, TEST_TIMEOUT_MS);
});
