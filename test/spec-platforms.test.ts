/**
 * SPEC "Platforms": Linux and macOS, x64 and arm64; every other platform gets UNSUPPORTED_PLATFORM from every
 * lifecycle command, and nothing else happens. The commands run as real processes with `process.platform`
 * (or `process.arch`) replaced before berth's first line (test/fixtures/fake-platform.ts).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { isSupportedPlatform } from "../src/daemon/context.ts";
import { BUN, homesPerTest, MAIN } from "./helpers/berth.ts";

const PRELOAD = join(import.meta.dir, "fixtures", "fake-platform.ts");
const newHome = homesPerTest(afterEach);

describe("which platforms are supported (pure)", () => {
  const cases: { platform: string; arch: string; supported: boolean }[] = [
    { platform: "linux", arch: "x64", supported: true },
    { platform: "linux", arch: "arm64", supported: true },
    { platform: "darwin", arch: "x64", supported: true },
    { platform: "darwin", arch: "arm64", supported: true },
    { platform: "freebsd", arch: "x64", supported: false },
    { platform: "win32", arch: "x64", supported: false },
    { platform: "linux", arch: "ia32", supported: false },
    { platform: "linux", arch: "arm", supported: false },
    { platform: "darwin", arch: "ppc64", supported: false },
  ];
  for (const { platform, arch, supported } of cases) {
    test(`${platform}-${arch} → ${supported ? "supported" : "UNSUPPORTED_PLATFORM"}`, () => expect(isSupportedPlatform(platform, arch)).toBe(supported));
  }
});

const LIFECYCLE_COMMANDS = [
  ["start"],
  ["stop"],
  ["restart"],
  ["version"],
  ["status"],
  ["bootstrap"],
  ["enable-remote-control"],
  ["disable-remote-control"],
  ["install", "--bootstrap"],
  ["update"],
  ["update", "--check"],
  ["connect"],
  ["logs"],
  ["down"],
  ["uninstall"],
  ["startup"],
  ["doctor"],
];

describe("every lifecycle command on another platform", () => {
  const fakes: Record<string, string>[] = [{ BERTH_TEST_PLATFORM: "freebsd" }, { BERTH_TEST_ARCH: "ia32" }];
  for (const fake of fakes) {
    test(`${JSON.stringify(fake)}: UNSUPPORTED_PLATFORM, exit 1, one JSON line, and nothing written`, async () => {
      const home = newHome({ install: false });
      const results = await Promise.all(
        LIFECYCLE_COMMANDS.map(async (args) => ({ args, result: await home.exec([BUN, "--preload", PRELOAD, MAIN, ...args], { env: fake }) })),
      );
      for (const { args, result } of results) {
        const seen = { args, code: result.code, stdout: result.stdout.trim().split("\n"), error: result.json?.error?.code };
        expect(seen).toEqual({ args, code: 1, stdout: [expect.any(String)], error: "UNSUPPORTED_PLATFORM" });
        expect(result.json.error.message).toContain("Linux and macOS");
      }
      expect(readdirSync(home.home)).toEqual([]);
      expect(existsSync(home.env.BERTH_INSTALL_DIR as string)).toBe(false);
      // No profile block, no startup entry; `.bun` is Bun's own cache of the transpiled source, not berth's.
      expect(readdirSync(home.env.HOME as string).filter((name) => name !== ".bun")).toEqual(["home"]);
    });
  }
});
