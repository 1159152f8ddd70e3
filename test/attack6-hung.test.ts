/**
 * A hung app-server (SPEC "Lifecycle rules", Stop): a server that someone paused with SIGSTOP (a debugger, a
 * `kill -STOP`, a stopped job) never runs its SIGTERM handler until it is continued, so a stop that only sent
 * SIGTERM waited the whole stopGraceMs and then SIGKILLed it: no graceful shutdown (its socket file left behind,
 * its hosted processes killed instead of ended). The stop continues it (SIGCONT after SIGTERM, identity checked).
 */
import { afterEach, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { eventually, homesPerTest, isAlive } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
/** Long enough that a graceful exit fits in it on a loaded machine; the stop without SIGCONT waits all of it. */
const STOP_GRACE_MS = 20_000;
const TEST_TIMEOUT_MS = 90_000;

function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

test.skipIf(process.platform !== "linux")(
  "stop of a SIGSTOPped app-server shuts it down gracefully (socket removed), not by SIGKILL after the grace",
  async () => {
    const home = newHome({ settings: { stopGraceMs: STOP_GRACE_MS } });
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    const pid = started.json.pid as number;
    process.kill(pid, "SIGSTOP");
    expect(await eventually(() => stateOf(pid) === "T")).toBe(true);

    const stopped = await home.run(["stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped" });
    expect(isAlive(pid)).toBe(false);
    // The server's SIGTERM handler ran: it removes its socket file (SPEC "App-server protocol": SIGTERM).
    expect(existsSync(home.path("daemon/app-server.sock"))).toBe(false);
    expect(existsSync(home.path("daemon/app-server.pid"))).toBe(false);
  },
  TEST_TIMEOUT_MS,
);
