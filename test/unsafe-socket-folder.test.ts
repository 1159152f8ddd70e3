/**
 * A socket in a state folder that is not safely the user's (writable by
 * others) may be someone else's: `version` and `status` ask it nothing at all
 * (they refuse, or report the folder), and a faster path must not bend that
 * (one that asked before its checks was tried: bench/README.md). A real
 * listener on the real socket path counts every connection.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync } from "node:fs";
import { homesPerTest, type TestHome } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);

/** A listener on the home's socket that answers nothing and counts who connects. */
function countingListener(home: TestHome): { connections: () => number; stop: () => void } {
  let connections = 0;
  const listener = Bun.listen({
    unix: home.path("daemon", "app-server.sock"),
    socket: {
      open: () => {
        connections += 1;
      },
      data() {},
    },
  });
  return { connections: () => connections, stop: () => listener.stop(true) };
}

const UNSAFE: [string, (home: TestHome) => void][] = [
  ["the daemon folder is group-writable", (home) => chmodSync(home.path("daemon"), 0o770)],
  ["BERTH_HOME is writable by others", (home) => chmodSync(home.home, 0o707)],
];

describe("a socket in an unsafe folder is asked nothing", () => {
  for (const [name, spoil] of UNSAFE) {
    test(`${name}: version refuses, status reports it, the socket sees no connection`, async () => {
      const home = newHome();
      mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
      const socket = countingListener(home);
      try {
        spoil(home);
        const version = await home.run(["version"]);
        expect(version.code).toBe(1);
        expect(version.json.error.code).toBe("UNSAFE_STATE");
        const status = await home.run(["status"]);
        expect(status.code).toBe(0);
        expect(status.json.problems.join("\n")).toContain("state folders");
        expect(status.json.appServer.answering).toBe(false);
        expect(socket.connections()).toBe(0);
      } finally {
        socket.stop();
      }
    });
  }

  test("the same listener in a safe home is asked (so the count above can tell)", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    const socket = countingListener(home);
    try {
      const status = await home.run(["status"]);
      expect(status.code).toBe(0);
      expect(status.json.appServer.answering).toBe(false);
      expect(status.json.appServer.answeredBy).toContain("does not speak the berth protocol");
      expect(socket.connections()).toBeGreaterThan(0);
    } finally {
      socket.stop();
    }
  });
});
