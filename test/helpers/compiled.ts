/**
 * Test helper: the compiled berth for a test file, as users get it — built
 * into a temporary folder before the file's first test, removed after its last.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compile } from "../../build.ts";

/** `bun build --compile` on a loaded machine. */
export const COMPILE_TIMEOUT_MS = 120_000;

type Hook = (fn: () => void | Promise<void>, timeoutMs?: number) => void;

/**
 * Registers the build on bun:test's `beforeAll` and its removal on `afterAll`.
 * `berth` is the binary and `dir` its folder: read them inside tests and hooks
 * (both are "" until the build has run).
 */
export function compiledPerFile(beforeAll: Hook, afterAll: Hook, options: { version: string; prefix: string }): { readonly berth: string; readonly dir: string } {
  const build = { berth: "", dir: "" };
  beforeAll(async () => {
    build.dir = mkdtempSync(join(tmpdir(), options.prefix));
    build.berth = join(build.dir, "berth");
    await compile({ version: options.version, outfile: build.berth });
  }, COMPILE_TIMEOUT_MS);
  afterAll(() => {
    if (build.dir) rmSync(build.dir, { recursive: true, force: true });
  });
  return build;
}
