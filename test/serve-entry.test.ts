/**
 * The app-server's launch line bypasses the CLI framework (src/serve-entry.ts):
 * only the exact argv the starter produces takes that path, and it keeps the
 * CLI's output contract (one JSON line on stdout, exit 0/1/2).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { appServerArgs } from "../src/daemon/app-server.ts";
import { daemonServeArgs } from "../src/serve-entry.ts";
import { makeHome, type TestHome } from "./helpers/berth.ts";

const homes: TestHome[] = [];
afterEach(async () => {
  for (const home of homes.splice(0)) await home.cleanup();
});

describe("daemon serve fast path", () => {
  test("daemonServeArgs takes exactly the starter's argv and nothing else", () => {
    const table: [string[], ReturnType<typeof daemonServeArgs>][] = [
      [["serve", "--listen", "unix:///s"], { listen: "unix:///s", remoteControl: false }],
      [["serve", "--listen", "unix:///s", "--remote-control"], { listen: "unix:///s", remoteControl: true }],
      [["serve"], undefined],
      [["serve", "--help"], undefined],
      [["serve", "--listen", "unix:///s", "--help"], undefined],
      [["serve", "--listen", "unix:///s", "--remote-control", "x"], undefined],
      [["serve", "--listen=unix:///s"], undefined],
      [["serve", "--listen", "tcp://x"], undefined],
      [["start", "--listen", "unix:///s"], undefined],
    ];
    for (const [argv, expected] of table) expect(daemonServeArgs(argv)).toEqual(expected);
  });

  test("what the starter launches is what the fast path accepts", () => {
    const ctx = { socket: { path: "/run/x.sock" } } as Parameters<typeof appServerArgs>[0];
    for (const remoteControlEnabled of [false, true]) {
      const settings = { remoteControlEnabled } as Parameters<typeof appServerArgs>[1];
      expect(daemonServeArgs(appServerArgs(ctx, settings))).toEqual({ listen: "unix:///run/x.sock", remoteControl: remoteControlEnabled });
    }
  });

  test("a bad --listen on the fast path: exit 2, exactly one JSON line with USAGE", async () => {
    const home = makeHome();
    homes.push(home);
    const result = await home.run(["serve", "--listen", "unix://"]);
    expect(result.code).toBe(2);
    expect(result.stdout.trimEnd().split("\n")).toHaveLength(1);
    expect(result.json).toMatchObject({ status: "error", error: { code: "USAGE" } });
    expect(result.stderr).toContain("--listen takes unix://PATH");
  }, 30_000);
});
