// The pure decisions behind `berth install`, as tables.
import { describe, expect, test } from "bun:test";
import { installStatus, linkAction, releasesToPrune, type LinkState, type ReleaseState } from "../src/install/decisions.ts";
import { installFailure } from "../src/install/release.ts";
import {
  chooseProfile,
  isDirOnPath,
  needsPathBlock,
  PATH_BLOCK_BEGIN,
  PATH_BLOCK_END,
  planProfileUpdate,
  renderPathBlock,
} from "../src/install/profile.ts";
import { compareVersions, isNewerVersion, parseVersion } from "../src/install/semver.ts";

describe("compareVersions", () => {
  const cases: { a: string; b: string; order: -1 | 0 | 1 }[] = [
    { a: "1.0.0", b: "1.0.0", order: 0 },
    { a: "1.0.0", b: "1.0.1", order: -1 },
    { a: "1.2.0", b: "1.10.0", order: -1 },
    { a: "2.0.0", b: "1.99.99", order: 1 },
    { a: "10.0.0", b: "9.0.0", order: 1 },
    { a: "v1.4.0", b: "1.4.0", order: 0 },
    { a: "1.0.0+build.7", b: "1.0.0", order: 0 },
    { a: "1.0.0-rc.1", b: "1.0.0", order: -1 },
    { a: "1.0.0", b: "1.0.0-rc.1", order: 1 },
    // the SemVer 2.0.0 §11 example chain
    { a: "1.0.0-alpha", b: "1.0.0-alpha.1", order: -1 },
    { a: "1.0.0-alpha.1", b: "1.0.0-alpha.beta", order: -1 },
    { a: "1.0.0-alpha.beta", b: "1.0.0-beta", order: -1 },
    { a: "1.0.0-beta", b: "1.0.0-beta.2", order: -1 },
    { a: "1.0.0-beta.2", b: "1.0.0-beta.11", order: -1 },
    { a: "1.0.0-beta.11", b: "1.0.0-rc.1", order: -1 },
    // not versions sort below every version
    { a: "banana", b: "0.0.1", order: -1 },
    { a: "1.0.0", b: "1.0", order: 1 },
    { a: "apple", b: "banana", order: -1 },
  ];
  for (const { a, b, order } of cases) {
    test(`${a} vs ${b} → ${order}`, () => {
      expect(compareVersions(a, b)).toBe(order);
      expect(compareVersions(b, a)).toBe(-order === 0 ? 0 : -order);
    });
  }

  test("sorts a list", () => {
    const list = ["1.10.0", "1.2.0", "1.2.0-rc.2", "0.9.9", "1.2.0-rc.10", "2.0.0"];
    expect(list.sort(compareVersions)).toEqual(["0.9.9", "1.2.0-rc.2", "1.2.0-rc.10", "1.2.0", "1.10.0", "2.0.0"]);
  });

  const parses: { text: string; ok: boolean }[] = [
    { text: "1.4.0", ok: true },
    { text: "0.0.0", ok: true },
    { text: "2.0.0-rc.1", ok: true },
    { text: "01.0.0", ok: false },
    { text: "1.4", ok: false },
    { text: "1.4.0-", ok: false },
    { text: "latest", ok: false },
    { text: "../1.4.0", ok: false },
  ];
  for (const { text, ok } of parses) {
    test(`parseVersion(${JSON.stringify(text)}) ${ok ? "parses" : "refuses"}`, () => {
      expect(parseVersion(text) !== undefined).toBe(ok);
    });
  }

  test("isNewerVersion", () => {
    expect(isNewerVersion("1.1.0", "1.0.0")).toBe(true);
    expect(isNewerVersion("1.0.0", "1.0.0")).toBe(false);
    expect(isNewerVersion("1.0.0-rc.1", "1.0.0")).toBe(false);
  });
});

describe("releasesToPrune", () => {
  const r = (version: string, target = "linux-x64") => `${version}-${target}`;
  const cases: {
    name: string;
    releases: string[];
    current: string | null;
    protect?: string[];
    previous?: string | null;
    prune: string[];
  }[] = [
    { name: "nothing installed", releases: [], current: null, prune: [] },
    { name: "only current", releases: [r("1.0.0")], current: r("1.0.0"), prune: [] },
    {
      name: "current + two previous: nothing to do",
      releases: [r("1.0.0"), r("1.1.0"), r("1.2.0")],
      current: r("1.2.0"),
      prune: [],
    },
    {
      name: "the fourth release prunes the oldest",
      releases: [r("1.0.0"), r("1.1.0"), r("1.2.0"), r("1.3.0")],
      current: r("1.3.0"),
      previous: r("1.2.0"),
      prune: [r("1.0.0")],
    },
    {
      name: "ordered by version, not by name (1.10 is newer than 1.9)",
      releases: [r("1.10.0"), r("1.9.0"), r("1.8.0"), r("1.11.0"), r("1.7.0")],
      current: r("1.11.0"),
      prune: [r("1.7.0"), r("1.8.0")],
    },
    {
      name: "after a downgrade the newest others are kept",
      releases: [r("1.0.0"), r("1.1.0"), r("1.2.0"), r("1.3.0")],
      current: r("1.0.0"),
      previous: r("1.3.0"),
      prune: [r("1.1.0")],
    },
    {
      name: "the release current pointed at before is kept even when it is old (rollback target)",
      releases: [r("1.0.0"), r("1.1.0"), r("1.2.0"), r("1.3.0")],
      current: r("1.3.0"),
      previous: r("1.0.0"),
      prune: [r("1.1.0")],
    },
    {
      name: "the release being installed is never pruned, even when current points elsewhere",
      releases: [r("0.1.0"), r("0.9.0"), r("1.0.0"), r("1.1.0"), r("1.2.0")],
      current: r("1.2.0"),
      protect: [r("0.1.0")],
      prune: [r("0.9.0")],
    },
    {
      name: "a missing current still keeps two",
      releases: [r("1.0.0"), r("1.1.0"), r("1.2.0")],
      current: null,
      prune: [r("1.0.0")],
    },
    {
      name: "prereleases order below their release",
      releases: [r("2.0.0-rc.1"), r("2.0.0-rc.2"), r("2.0.0"), r("1.9.0")],
      current: r("2.0.0"),
      prune: [r("1.9.0")],
    },
    {
      name: "folders that are not releases are left alone",
      releases: ["notes", ".DS_Store", "1.0.0", r("0.1.0"), r("0.2.0"), r("0.3.0"), r("0.4.0")],
      current: r("0.4.0"),
      prune: [r("0.1.0")],
    },
    {
      name: "several targets of one version count as separate releases",
      releases: [r("1.0.0", "linux-x64"), r("1.0.0", "linux-x64-musl"), r("1.1.0"), r("1.2.0")],
      current: r("1.2.0"),
      // a tie in version is broken by name, so the outcome does not depend on readdir order
      prune: [r("1.0.0", "linux-x64")],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      expect(releasesToPrune({ releases: c.releases, current: c.current, protect: c.protect, previous: c.previous })).toEqual(c.prune);
    });
  }

  test("keepPrevious 0 keeps only current", () => {
    expect(releasesToPrune({ releases: [r("1.0.0"), r("1.1.0")], current: r("1.1.0"), previous: r("1.0.0"), keepPrevious: 0 })).toEqual([
      r("1.0.0"),
    ]);
  });
});

describe("installStatus", () => {
  const cases: { release: ReleaseState; before: string | null; status: "installed" | "alreadyInstalled" }[] = [
    { release: "same", before: "1.0.0-linux-x64", status: "alreadyInstalled" },
    { release: "same", before: "0.9.0-linux-x64", status: "installed" },
    { release: "same", before: null, status: "installed" },
    { release: "different", before: "1.0.0-linux-x64", status: "installed" },
    { release: "missing", before: null, status: "installed" },
  ];
  for (const c of cases) {
    test(`${c.release}, current was ${c.before} → ${c.status}`, () => {
      expect(installStatus(c.release, c.before, "1.0.0-linux-x64")).toBe(c.status);
    });
  }
});

describe("linkAction", () => {
  const cases: { state: LinkState; action: ReturnType<typeof linkAction> }[] = [
    { state: { kind: "missing" }, action: "create" },
    { state: { kind: "ours" }, action: "keep" },
    { state: { kind: "otherLink", target: "/opt/berth/bin/berth" }, action: "replace" },
    { state: { kind: "berthFile" }, action: "replace" },
    { state: { kind: "foreign", what: "file" }, action: "refuse" },
    { state: { kind: "foreign", what: "directory" }, action: "refuse" },
    { state: { kind: "foreign", what: "other" }, action: "refuse" },
  ];
  for (const c of cases) {
    test(`${JSON.stringify(c.state)} → ${c.action}`, () => expect(linkAction(c.state)).toBe(c.action));
  }
});

describe("installFailure", () => {
  const err = (code: string) => Object.assign(new Error(`${code}: something`), { code });
  const cases: { code: string; pattern: RegExp }[] = [
    { code: "ENOSPC", pattern: /could not copy the binary to \/h\/staging\/berth: no space left on the device \(ENOSPC\); free some space/ },
    { code: "EDQUOT", pattern: /no space left on the device \(EDQUOT\)/ },
    { code: "EACCES", pattern: /permission denied \(EACCES\); check that you own \/h\/staging/ },
    { code: "EROFS", pattern: /read-only/ },
    { code: "EIO", pattern: /EIO: something/ },
  ];
  for (const c of cases) {
    test(c.code, () => {
      const error = installFailure("copy the binary to", "/h/staging/berth", err(c.code), "`current` still points at 1.0.0-linux-x64.");
      expect(error.code).toBe("INSTALL_FAILED");
      expect(error.message).toMatch(c.pattern);
      expect(error.message).toEndWith("`current` still points at 1.0.0-linux-x64.");
    });
  }
});

describe("chooseProfile", () => {
  const home = "/home/ada";
  const dir = "/home/ada/.local/bin";
  const bash = [
    { path: "/home/ada/.bashrc", placement: "top" },
    { path: "/home/ada/.profile", placement: "end" },
  ];
  const profile = [{ path: "/home/ada/.profile", placement: "end" }];
  const cases: { shell?: string; platform?: string; zdotdir?: string; expected: { path: string; placement: string }[] | RegExp }[] = [
    { shell: "/bin/bash", expected: bash },
    { shell: "/usr/local/bin/bash", platform: "darwin", expected: bash },
    { shell: "-bash", expected: bash },
    { shell: "/bin/zsh", expected: [{ path: "/home/ada/.zshenv", placement: "end" }] },
    { shell: "/bin/zsh", platform: "darwin", expected: [{ path: "/home/ada/.zshenv", placement: "end" }] },
    { shell: "/bin/zsh", zdotdir: "/home/ada/.config/zsh", expected: [{ path: "/home/ada/.config/zsh/.zshenv", placement: "end" }] },
    { shell: "/bin/zsh", zdotdir: "relative", expected: [{ path: "/home/ada/.zshenv", placement: "end" }] },
    { shell: "/bin/sh", expected: profile },
    { shell: "/bin/dash", expected: profile },
    { shell: "/bin/ksh", expected: profile },
    { shell: "/bin/ash", expected: profile },
    { shell: "", expected: profile },
    { shell: undefined, expected: profile },
    { shell: "/usr/bin/fish", expected: /fish does not read POSIX shell profiles; run `fish_add_path \/home\/ada\/.local\/bin`/ },
    { shell: "/bin/tcsh", expected: /tcsh does not read POSIX shell profiles/ },
  ];
  for (const c of cases) {
    test(`SHELL=${c.shell}${c.platform ? ` on ${c.platform}` : ""}${c.zdotdir ? ` ZDOTDIR=${c.zdotdir}` : ""}`, () => {
      const choice = chooseProfile({ shell: c.shell, home, platform: c.platform ?? "linux", zdotdir: c.zdotdir, dir });
      if (Array.isArray(c.expected)) expect(choice).toEqual({ kind: "profiles", targets: c.expected } as never);
      else {
        expect(choice.kind).toBe("unsupported");
        if (choice.kind === "unsupported") expect(choice.hint).toMatch(c.expected);
      }
    });
  }
});

describe("needsPathBlock", () => {
  const cases: { dir: string; path: string; needs: boolean }[] = [
    // The installing shell's PATH says nothing about a non-interactive ssh command.
    { dir: "/home/ada/.local/bin", path: "/home/ada/.local/bin:/usr/bin", needs: true },
    { dir: "/home/ada/.local/bin", path: "/usr/bin", needs: true },
    { dir: "/usr/local/bin", path: "/usr/local/bin:/usr/bin", needs: false },
    { dir: "/opt/berth/bin", path: "/usr/bin", needs: true },
  ];
  for (const c of cases) {
    test(`${c.dir} with PATH=${c.path} → ${c.needs}`, () => expect(needsPathBlock(c.dir, "/home/ada", c.path)).toBe(c.needs));
  }
});

describe("isDirOnPath", () => {
  const cases: { path: string | undefined; on: boolean }[] = [
    { path: "/usr/bin:/home/ada/.local/bin:/bin", on: true },
    { path: "/home/ada/.local/bin/", on: true },
    { path: "/home/ada/.local/bin//", on: true },
    { path: "/home/ada/x/../.local/bin", on: true },
    { path: "/usr/bin:/bin", on: false },
    { path: "/home/ada/.local/bin2:/home/ada/.local", on: false },
    { path: ".local/bin", on: false },
    { path: "", on: false },
    { path: undefined, on: false },
  ];
  for (const c of cases) {
    test(`${JSON.stringify(c.path)} → ${c.on}`, () => expect(isDirOnPath("/home/ada/.local/bin", c.path)).toBe(c.on));
  }
});

describe("the PATH block", () => {
  const home = "/home/ada";
  const block = renderPathBlock("/home/ada/.local/bin", home);

  test("is marked, uses $HOME under the home folder, and adds the folder only once", () => {
    expect(block).toBe(
      [
        PATH_BLOCK_BEGIN,
        "# Added by `berth install` so that the berth command is on PATH.",
        'case ":$PATH:" in',
        '  *:"$HOME/.local/bin":*) ;;',
        '  *) export PATH="$HOME/.local/bin:$PATH" ;;',
        "esac",
        PATH_BLOCK_END,
        "",
      ].join("\n"),
    );
  });

  test("outside HOME the path is written out, quoted for sh", () => {
    expect(renderPathBlock("/opt/my tools/$x`y\"z/", home)).toContain('export PATH="/opt/my tools/\\$x\\`y\\"z:$PATH"');
  });

  for (const shell of ["sh", "dash", "bash", "zsh"]) {
    test.skipIf(!Bun.which(shell))(`${shell} runs it: adds the folder once, even when sourced twice`, () => {
      const dir = "/tmp/berth weird $dir";
      const script = `${renderPathBlock(dir, "/nonexistent")}\n${renderPathBlock(dir, "/nonexistent")}\nprintf '%s' "$PATH"`;
      const out = Bun.spawnSync([shell, "-c", script], { env: { PATH: "/usr/bin:/bin", HOME: "/nonexistent" } });
      expect(out.stdout.toString()).toBe(`${dir}:/usr/bin:/bin`);
    });
  }

  const other = renderPathBlock("/opt/berth/bin", home);
  const cases: { name: string; existing: string | undefined; plan: ReturnType<typeof planProfileUpdate> }[] = [
    { name: "no profile yet: create it", existing: undefined, plan: { action: "create", text: block } },
    { name: "empty profile: the block alone", existing: "", plan: { action: "append", text: block } },
    { name: "appended after a blank line", existing: "alias ll='ls -l'\n", plan: { action: "append", text: `alias ll='ls -l'\n\n${block}` } },
    {
      name: "a missing final newline is added first",
      existing: "alias ll='ls -l'",
      plan: { action: "append", text: `alias ll='ls -l'\n\n${block}` },
    },
    { name: "already present: nothing to do", existing: `a=1\n\n${block}b=2\n`, plan: { action: "present" } },
    {
      name: "a block for another folder is replaced in place",
      existing: `a=1\n${other}b=2\n`,
      plan: { action: "replace", text: `a=1\n${block}b=2\n` },
    },
    {
      name: "a begin marker without its end is left alone",
      existing: `a=1\n${PATH_BLOCK_BEGIN}\nexport PATH=x\n`,
      plan: { action: "malformed", reason: expect.stringContaining("do not form one block") as unknown as string },
    },
    {
      name: "two blocks are left alone",
      existing: `${block}${block}`,
      plan: { action: "malformed", reason: expect.stringContaining("do not form one block") as unknown as string },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const plan = planProfileUpdate(c.existing, block);
      expect(plan).toEqual(c.plan);
      if ("text" in plan) {
        // whatever we write holds exactly one block, and applying it again changes nothing
        expect(plan.text.split("\n").filter((l) => l === PATH_BLOCK_BEGIN)).toHaveLength(1);
        expect(planProfileUpdate(plan.text, block)).toEqual({ action: "present" });
      }
    });
  }

  const guard = "# ~/.bashrc\n\n# If not running interactively, don't do anything\ncase $- in\n    *i*) ;;\n      *) return;;\nesac\nalias ll='ls -l'\n";
  const topCases: { name: string; existing: string | undefined; plan: ReturnType<typeof planProfileUpdate> }[] = [
    { name: "top: no profile yet", existing: undefined, plan: { action: "create", text: block } },
    { name: "top: empty profile", existing: "", plan: { action: "prepend", text: block } },
    { name: "top: before the interactive guard", existing: guard, plan: { action: "prepend", text: `${block}\n${guard}` } },
    { name: "top: an old block after the guard is moved up", existing: `${guard}\n${block}`, plan: { action: "move", text: `${block}\n${guard}` } },
    { name: "top: an old block mid-file is moved, lines around it kept", existing: `a=1\n${block}b=2\n`, plan: { action: "move", text: `${block}\na=1\nb=2\n` } },
    { name: "top: already at the top", existing: `${block}\n${guard}`, plan: { action: "present" } },
    { name: "top: below comments only counts as the top", existing: `# my bashrc\n\n${block}${guard}`, plan: { action: "present" } },
    { name: "top: another folder's block at the top is replaced in place", existing: `${other}${guard}`, plan: { action: "replace", text: `${block}${guard}` } },
  ];
  for (const c of topCases) {
    test(c.name, () => {
      const plan = planProfileUpdate(c.existing, block, "top");
      expect(plan).toEqual(c.plan);
      if ("text" in plan) {
        expect(plan.text.split("\n").filter((l) => l === PATH_BLOCK_BEGIN)).toHaveLength(1);
        expect(planProfileUpdate(plan.text, block, "top")).toEqual({ action: "present" });
        // every user line is kept
        const userLines = (c.existing ?? "").split("\n").filter((l) => l.trim() !== "" && !block.includes(l) && !other.includes(l));
        for (const line of userLines) expect(plan.text.split("\n")).toContain(line);
      }
    });
  }
});
