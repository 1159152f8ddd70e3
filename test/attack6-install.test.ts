/**
 * `install` and `uninstall` on a user's real shell set-up (SPEC "Commands": uninstall removes the "PATH blocks";
 * "Releases": the block is added to the profile). Dotfile managers (GNU stow, yadm, chezmoi's symlink mode,
 * home-manager) make ~/.bashrc a symlink: install writes its block through the link into the real file, so
 * uninstall must take it out of that same file, and a profile it cannot write must not end the uninstall
 * half-way (BERTH_HOME left behind).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chownSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { addPathBlock, PATH_BLOCK_BEGIN } from "../src/install/profile.ts";
import { BUN, ROOT, homesPerTest, type TestHome } from "./helpers/berth.ts";

/** Read-only bind mounts a test made; undone before its home is removed (hooks run in the order they were added). */
const bound: string[] = [];
afterEach(() => {
  for (const path of bound.splice(0)) Bun.spawnSync(["umount", "-l", path]);
});
const newHome = homesPerTest(afterEach);
const TEST_TIMEOUT_MS = 60_000;
const USER_LINES = "# my dotfiles\nalias ll='ls -l'\n";

/** ~/.bashrc → dotfiles/bashrc (relative, as stow makes it), holding the user's own lines. */
function dotfiles(home: TestHome): { link: string; real: string } {
  const userHome = home.env.HOME as string;
  mkdirSync(join(userHome, "dotfiles"));
  const real = join(userHome, "dotfiles", "bashrc");
  writeFileSync(real, USER_LINES);
  const link = join(userHome, ".bashrc");
  symlinkSync("dotfiles/bashrc", link);
  return { link, real };
}

/** The block install adds, by install's own code (src/install/profile.ts), as `berth install` under bash does. */
function addBlock(home: TestHome): void {
  const update = addPathBlock({ dir: home.env.BERTH_INSTALL_DIR as string, env: { SHELL: "/bin/bash", PATH: "/usr/bin:/bin" }, home: home.env.HOME as string });
  expect(update.pathUpdated).toBe(true);
}

describe("uninstall and a symlinked profile", () => {
  test(
    "the PATH block install wrote through the link is removed from the real file; the link and the user's lines stay",
    async () => {
      const home = newHome();
      const { link, real } = dotfiles(home);
      addBlock(home);
      expect(readFileSync(real, "utf8")).toContain(PATH_BLOCK_BEGIN);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);

      const result = await home.run(["uninstall"], { env: { SHELL: "/bin/bash" } });
      expect(result.json).toMatchObject({ status: "uninstalled" });
      // The user's lines, as they were (the blank line install put after its block aside).
      expect(readFileSync(real, "utf8").trimStart()).toBe(USER_LINES);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(result.json.removed).toContain(`${link} (PATH block)`);
    },
    TEST_TIMEOUT_MS,
  );
});

/** Whether this machine lets the tests bind-mount (root, and a kernel/container that allows it). */
function canBindMount(): boolean {
  return process.platform === "linux" && process.getuid?.() === 0 && Bun.which("mount") !== null;
}

/** Makes `path` read-only in place: a read-only bind mount over it (configuration management's way; EROFS, EBUSY). */
function readOnly(path: string): void {
  for (const args of [["--bind", path, path], ["-o", "remount,ro,bind", path, path]]) {
    const mount = Bun.spawnSync(["mount", ...args], { stderr: "pipe" });
    if (mount.exitCode !== 0) throw new Error(`mount ${args.join(" ")} failed: ${mount.stderr.toString()}`);
    if (args[0] === "--bind") bound.push(path);
  }
}

describe.skipIf(!canBindMount())("uninstall and a profile it cannot rewrite", () => {
  test(
    "it still removes everything else (BERTH_HOME included), and says which profile keeps its block and what to do",
    async () => {
      const home = newHome();
      const profile = join(home.env.HOME as string, ".bashrc");
      writeFileSync(profile, USER_LINES);
      addBlock(home);
      readOnly(profile);
      expect((await home.run(["bootstrap", "--no-auto-update"])).json.status).toBe("bootstrapped");

      const result = await home.run(["uninstall"], { env: { SHELL: "/bin/bash" } });
      expect(result.json).toMatchObject({ status: "uninstalled", stopped: { appServer: "stopped", keeper: "stopped" } });
      expect(result.stdout.trim().split("\n")).toHaveLength(1);
      expect(existsSync(home.home)).toBe(false);
      expect(result.json.kept.join("\n")).toContain(`${profile} (could not remove its PATH block`);
      expect(readFileSync(profile, "utf8")).toContain(PATH_BLOCK_BEGIN);
    },
    TEST_TIMEOUT_MS,
  );
});

/** Root can write any file, so only root shows a rewrite that would hand another user's file to us. */
const isRoot = process.getuid?.() === 0;
const OTHER_UID = 65534;

describe.skipIf(!isRoot)(`a profile that links to another user's file (uid ${OTHER_UID}), as root with that HOME`, () => {
  /** ~/.bashrc → a file outside HOME that the other user owns, holding their lines (and, for uninstall, berth's block). */
  function foreignProfile(home: TestHome, withBlock: boolean): { link: string; real: string; text: string } {
    const userHome = home.env.HOME as string;
    const real = join(home.home, "..", "shared-bashrc");
    writeFileSync(real, USER_LINES);
    if (withBlock) {
      // The block as install writes it, put there while the file was still writable by us (a chown since).
      writeFileSync(join(userHome, ".bashrc"), USER_LINES);
      addBlock(home);
      writeFileSync(real, readFileSync(join(userHome, ".bashrc"), "utf8"));
      rmSync(join(userHome, ".bashrc"));
    }
    chownSync(real, OTHER_UID, OTHER_UID);
    const link = join(userHome, ".bashrc");
    symlinkSync(real, link);
    return { link, real, text: readFileSync(real, "utf8") };
  }

  test("install does not rewrite it (it would become root's): a warning says what to add by hand", () => {
    const home = newHome();
    const { link, real, text } = foreignProfile(home, false);
    const update = addPathBlock({ dir: home.env.BERTH_INSTALL_DIR as string, env: { SHELL: "/bin/bash", PATH: "/usr/bin:/bin" }, home: home.env.HOME as string });
    expect(update.warning).toContain(`did not change ${link}: ${real} is owned by uid ${OTHER_UID}`);
    expect(readFileSync(real, "utf8")).toBe(text);
    expect(statSync(real).uid).toBe(OTHER_UID);
  });

  test(
    "uninstall leaves its block and its owner, names it in kept, and removes everything else",
    async () => {
      const home = newHome();
      const { link, real, text } = foreignProfile(home, true);
      expect(text).toContain(PATH_BLOCK_BEGIN);
      const result = await home.run(["uninstall"], { env: { SHELL: "/bin/bash" } });
      expect(result.json).toMatchObject({ status: "uninstalled" });
      expect(result.json.kept.join("\n")).toContain(`${link} (${real} is owned by uid ${OTHER_UID}`);
      expect(readFileSync(real, "utf8")).toBe(text);
      expect(statSync(real).uid).toBe(OTHER_UID);
      expect(existsSync(home.home)).toBe(false);
    },
    TEST_TIMEOUT_MS,
  );
});

test("install with a FIFO as ~/.bashrc: a warning, not a read that never ends", async () => {
  const home = newHome();
  const profile = join(home.env.HOME as string, ".bashrc");
  expect(Bun.spawnSync(["mkfifo", "-m", "600", profile]).exitCode).toBe(0);
  const script = `const { addPathBlock } = await import(${JSON.stringify(join(ROOT, "src", "install", "profile.ts"))});
console.log(JSON.stringify(addPathBlock({ dir: ${JSON.stringify(home.env.BERTH_INSTALL_DIR)}, env: { SHELL: "/bin/bash", PATH: "/usr/bin:/bin" }, home: ${JSON.stringify(home.env.HOME)} })));`;
  // In a process of its own: a read of the FIFO blocks that process, which is killed after this long.
  const run = await home.exec([BUN, "-e", script], { timeoutMs: 20_000 });
  expect(run.code).toBe(0);
  expect(run.json.warning).toContain(`did not change ${profile}: ${profile} is not a regular file`);
}, TEST_TIMEOUT_MS);
