/**
 * SPEC "Files": directories are created 0700 and files 0600, and nothing is written outside BERTH_HOME but the
 * command link, one profile block and the socket fallback folder. Swept over everything a full session leaves,
 * so a state file added later cannot slip through with the process umask's mode.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { lstatSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { createHash } from "node:crypto";
import { berthHomeFrom, installLinkFrom, socketPlan } from "../src/platform/paths.ts";
import { BUN, homesPerTest, MAIN } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const SESSION_TIMEOUT_MS = 120_000;

type Entry = { path: string; kind: "dir" | "file" | "link" | "socket" | "other"; mode: number };

function walk(root: string, dir = root, found: Entry[] = []): Entry[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    // A temp file the keeper renamed between the listing and this lstat is gone: a write in flight, not a leftover.
    const stat = lstatSync(path, { throwIfNoEntry: false });
    if (!stat) continue;
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
      // The rest of BERTH_HOME: folders 0700; a release binary is executable (install makes it 0755 inside 0700
      // folders), `current` is the one link.
      const packages = walk(home.path("packages")).filter((e) => !/^standalone\/releases\/[^/]+\/berth$/.test(e.path) && e.path !== "standalone/current");
      expect(packages.map((e) => e.path)).toContain("standalone/releases");
      expect(packages.filter((e) => (e.kind === "dir" ? e.mode !== 0o700 : e.kind !== "file" || e.mode !== 0o600))).toEqual([]);
      expect(lstatSync(home.path("daemon")).mode & 0o7777).toBe(0o700);
      expect(lstatSync(home.home).mode & 0o7777).toBe(0o700);

      // Outside BERTH_HOME: nothing but what the spec lists (no command link or profile: install did not run here).
      const outside = readdirSync(dirname(home.home)).filter((name) => name !== "home" && name !== ".bun");
      expect(outside).toEqual([]);
    },
    SESSION_TIMEOUT_MS,
  );
});


// SPEC "Socket path": inside BERTH_HOME unless longer than the platform allows (107 bytes on Linux, 103 on
// macOS) or holding ':'; then ${XDG_RUNTIME_DIR:-/tmp}/berth-<uid>-<8 hex of sha256(BERTH_HOME)>/app-server.sock.
describe("the socket path (pure)", () => {
  const SUFFIX = "/daemon/app-server.sock";
  /** A home whose preferred socket path is exactly `bytes` long. */
  const homeOf = (bytes: number) => `/h${"x".repeat(bytes - SUFFIX.length - 2)}`;
  const hash8 = (home: string) => createHash("sha256").update(home).digest("hex").slice(0, 8);
  const cases: { name: string; home: string; platform: string; runtimeDir?: string; fallsBack: boolean; base?: string }[] = [
    { name: "linux, 107 bytes", home: homeOf(107), platform: "linux", fallsBack: false },
    { name: "linux, 108 bytes", home: homeOf(108), platform: "linux", fallsBack: true, base: "/tmp" },
    { name: "macOS, 103 bytes", home: homeOf(103), platform: "darwin", fallsBack: false },
    { name: "macOS, 104 bytes", home: homeOf(104), platform: "darwin", fallsBack: true, base: "/tmp" },
    { name: "a ':' in a short home", home: "/srv/a:b/.berth", platform: "linux", fallsBack: true, base: "/tmp" },
    { name: "too long, XDG_RUNTIME_DIR set", home: homeOf(120), platform: "linux", runtimeDir: "/run/user/7", fallsBack: true, base: "/run/user/7" },
    { name: "too long, a relative XDG_RUNTIME_DIR is ignored", home: homeOf(120), platform: "linux", runtimeDir: "run", fallsBack: true, base: "/tmp" },
    { name: "short, XDG_RUNTIME_DIR unused", home: "/home/u/.berth", platform: "linux", runtimeDir: "/run/user/7", fallsBack: false },
  ];
  for (const { name, home, platform, runtimeDir, fallsBack, base } of cases) {
    test(name, () => {
      const plan = socketPlan({ home, platform, uid: 7, ...(runtimeDir ? { runtimeDir } : {}) });
      if (!fallsBack) return expect(plan).toEqual({ path: `${home}${SUFFIX}` });
      const fallbackDir = `${base}/berth-7-${hash8(home)}`;
      expect(plan).toEqual({ path: `${fallbackDir}/app-server.sock`, fallbackDir });
    });
  }
});

// SPEC "Files": BERTH_HOME defaults to ~/.berth; the command link to ~/.local/bin/berth (BERTH_INSTALL_DIR names its folder).
describe("default locations (pure)", () => {
  const cases: { env: Record<string, string>; home: string; link: string }[] = [
    { env: { HOME: "/home/ada" }, home: "/home/ada/.berth", link: "/home/ada/.local/bin/berth" },
    { env: { HOME: "/home/ada", BERTH_HOME: "/srv/berth" }, home: "/srv/berth", link: "/home/ada/.local/bin/berth" },
    { env: { HOME: "/home/ada", BERTH_INSTALL_DIR: "/opt/bin" }, home: "/home/ada/.berth", link: "/opt/bin/berth" },
    { env: { HOME: "/home/ada", BERTH_HOME: "/srv/b/../berth/" }, home: "/srv/berth", link: "/home/ada/.local/bin/berth" },
  ];
  for (const { env, home, link } of cases) {
    test(JSON.stringify(env), () => expect({ home: berthHomeFrom(env), link: installLinkFrom(env) }).toEqual({ home, link }));
  }
});
