/**
 * install.sh (`curl … | sh`) on a hardened server whose /tmp (TMPDIR) is mounted noexec — CIS benchmarks and
 * many distributions' hardening guides ask for it. The downloaded berth could not run from its temporary folder
 * (the shell's status 126), so the install failed on every such machine. It now runs the verified copy from a
 * temporary folder in HOME instead, removed like the other on every way out. A real noexec tmpfs (root, mount);
 * a stand-in berth that records how it was run, as test/install-sh.test.ts does.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SCRIPT = join(import.meta.dir, "..", "install.sh");
const VERSION = "1.4.0";
const SHELLS = [["dash"], ["busybox", "sh"], ["bash"]].filter((cmd) => Bun.which(cmd[0] as string) !== null);

function canMount(): boolean {
  return process.platform === "linux" && process.getuid?.() === 0 && Bun.which("mount") !== null;
}

const dirs: string[] = [];
const mounts: string[] = [];
afterEach(() => {
  for (const mount of mounts.splice(0)) Bun.spawnSync(["umount", "-l", mount]);
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A release folder (file://) whose linux-x64 asset is a stand-in berth writing its $0 and argv to $MARKER (or `body`). */
function release(root: string, body = `#!/bin/sh\nprintf '%s\\n' "$0" "$@" > "$MARKER"\nprintf '%s\\n' '{"status":"installed"}'\n`): string {
  const dir = join(root, "release");
  mkdirSync(join(dir, VERSION), { recursive: true });
  writeFileSync(join(dir, "latest.json"), `{"version":"${VERSION}"}\n`);
  const gz = Bun.gzipSync(Buffer.from(body));
  writeFileSync(join(dir, VERSION, "berth-linux-x64.gz"), gz);
  writeFileSync(join(dir, VERSION, "SHA256SUMS"), `${createHash("sha256").update(gz).digest("hex")}  berth-linux-x64.gz\n`);
  return dir;
}

describe.skipIf(!canMount())("install.sh with TMPDIR on a noexec mount", () => {
  for (const shell of SHELLS) {
    test(`${shell.join(" ")}: berth runs from a temporary folder in HOME; both temporary folders, and one a killed run left, are gone after`, () => {
      const root = mkdtempSync(join(tmpdir(), "berth-a6-noexec-"));
      dirs.push(root);
      const noexec = join(root, "tmp");
      mkdirSync(noexec);
      const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=16m,noexec,mode=1777", "tmpfs", noexec], { stderr: "pipe" });
      if (mount.exitCode !== 0) throw new Error(`mount failed: ${mount.stderr.toString()}`);
      mounts.push(noexec);
      const home = join(root, "user");
      mkdirSync(home);
      // Left by an earlier run killed outright (its shell's pid is gone), and by one still running (this test's pid).
      const deadPid = Bun.spawnSync(["true"]).pid;
      const stale = join(home, `.berth-install.${deadPid}.aB3dE9`);
      const live = `.berth-install.${process.pid}.xY7zW1`;
      mkdirSync(stale);
      writeFileSync(join(stale, "berth"), "a whole berth");
      mkdirSync(join(home, live));
      const marker = join(root, "marker");
      const run = Bun.spawnSync([...shell, "-s", "--", "--bootstrap"], {
        stdin: Bun.file(SCRIPT),
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: home,
          TMPDIR: noexec,
          MARKER: marker,
          BERTH_INSTALL_TARGET: "linux-x64",
          BERTH_RELEASE_BASE_URL: `file://${release(root)}`,
        },
      });
      const stdout = run.stdout.toString();
      expect({ code: run.exitCode, stdout, stderr: run.stderr.toString() }).toMatchObject({ code: 0, stdout: '{"status":"installed"}\n' });
      const [self, ...args] = readFileSync(marker, "utf8").trimEnd().split("\n");
      expect(args).toEqual(["install", "--bootstrap"]);
      expect(self?.startsWith(`${home}/.berth-install.`)).toBe(true);
      expect(run.stderr.toString()).toContain("noexec");
      expect(readdirSync(noexec)).toEqual([]);
      expect(readdirSync(home)).toEqual([live]);
      expect(existsSync(self as string)).toBe(false);
    });
  }
});

test.skipIf(Bun.which("bash") === null)("bash: a download this machine cannot execute (another target) is named as such, not taken for noexec", () => {
  const root = mkdtempSync(join(tmpdir(), "berth-a6-noexec-"));
  dirs.push(root);
  const tmp = join(root, "tmp");
  const home = join(root, "user");
  mkdirSync(tmp);
  mkdirSync(home);
  // An ELF header for no machine this kernel runs: execve says ENOEXEC, and bash gives up with status 126.
  const elf = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(8), Buffer.from([2, 0, 0xff, 0x7f]), Buffer.alloc(44)]);
  const run = Bun.spawnSync(["bash", "-s", "--"], {
    stdin: Bun.file(SCRIPT),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, TMPDIR: tmp, BERTH_INSTALL_TARGET: "linux-x64", BERTH_RELEASE_BASE_URL: `file://${release(root, elf.toString("latin1"))}` },
  });
  expect(run.exitCode).toBe(1);
  const last = JSON.parse(run.stdout.toString().trimEnd().split("\n").pop() as string);
  expect(last).toMatchObject({ status: "error", error: { code: "INSTALL_FAILED", message: expect.stringContaining("cannot be executed here") } });
  expect(readdirSync(tmp)).toEqual([]);
  expect(readdirSync(home)).toEqual([]);
});
