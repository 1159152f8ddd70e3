/**
 * SPEC "Files": directories are created 0700 and files 0600, and nothing is written outside BERTH_HOME but the
 * command link, one profile block and the socket fallback folder. Swept over everything a full session leaves,
 * so a state file added later cannot slip through with the process umask's mode.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { lstatSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { BUN, homesPerTest, MAIN } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const SESSION_TIMEOUT_MS = 120_000;

type Entry = { path: string; kind: "dir" | "file" | "link" | "socket" | "other"; mode: number };

function walk(root: string, dir = root, found: Entry[] = []): Entry[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const stat = lstatSync(path);
    const kind = stat.isDirectory() ? "dir" : stat.isFile() ? "file" : stat.isSymbolicLink() ? "link" : stat.isSocket() ? "socket" : "other";
    found.push({ path: path.slice(root.length + 1), kind, mode: stat.mode & 0o7777 });
    if (kind === "dir") walk(root, path, found);
  }
  return found;
}

describe("modes of everything berth writes", () => {
  test(
    "after bootstrap --remote-control, restart, logs, status, doctor and a failed update: daemon/ holds 0700 folders and 0600 files only",
    async () => {
      // A permissive umask in the caller: berth must not inherit it for its own state.
      const home = newHome();
      const env = { BERTH_RELEASE_BASE_URL: `file://${dirname(home.home)}/no-releases` };
      for (const args of [["bootstrap", "--remote-control"], ["restart"], ["logs"], ["status"], ["doctor"], ["update"]]) {
        const result = await home.exec(["sh", "-c", 'umask 000; exec "$@"', "sh", BUN, MAIN, ...args], { env });
        expect({ args, json: result.json !== undefined }).toEqual({ args, json: true });
      }
      const entries = walk(home.path("daemon"));
      // Each kind the session makes is there: the sweep cannot pass on an empty folder.
      for (const name of ["settings.json", "wanted.json", "app-server.pid", "updater.pid", "app-server.log", "remote-control.token", "app-server.sock", "daemon.lock"]) {
        expect(entries.map((e) => e.path)).toContain(name);
      }
      const wrong = entries.filter((e) => (e.kind === "dir" ? e.mode !== 0o700 : e.kind === "link" || e.kind === "other" || e.mode !== 0o600));
      expect(wrong).toEqual([]);
      expect(lstatSync(home.path("daemon")).mode & 0o7777).toBe(0o700);
      expect(lstatSync(home.home).mode & 0o7777).toBe(0o700);

      // Outside BERTH_HOME: nothing but what the spec lists (no command link or profile: install did not run here).
      const outside = readdirSync(dirname(home.home)).filter((name) => name !== "home" && name !== ".bun");
      expect(outside).toEqual([]);
    },
    SESSION_TIMEOUT_MS,
  );
});

