// The daemons route berth's output through writeOutput (src/stdio.ts), which
// their log writer stamps and rotates (captureStdio, src/daemon/log.ts). They
// no longer patch process.stdout/stderr (building those streams costs a daemon
// ~2.4 MB resident), so nothing in their module graph may write through them.
import { describe, expect, test } from "bun:test";
import { join, relative, resolve } from "node:path";

const ROOT = join(import.meta.dir, "..");
/** `process.stdout` / `process.stderr` used in code, not in a comment. */
const STREAM_USE = /^(?!\s*(?:\/\/|\*|\/\*)).*\bprocess\.std(?:out|err)\b/m;

async function moduleGraph(entry: string): Promise<string[]> {
  const result = await Bun.build({ entrypoints: [join(ROOT, entry)], target: "bun", metafile: true, external: ["bun:ffi"] });
  if (!result.success || !result.metafile) throw new Error(`cannot bundle ${entry}: ${result.logs.join("\n")}`);
  // The metafile names inputs relative to the working directory.
  return Object.keys(result.metafile.inputs)
    .filter((path) => !path.includes("node_modules"))
    .map((path) => relative(ROOT, resolve(path)));
}

describe("daemon output", () => {
  test("no module a daemon loads writes through process.stdout or process.stderr", async () => {
    const modules = await moduleGraph("src/serve-entry.ts");
    expect(modules).toContain("src/server/run.ts");
    expect(modules).toContain("src/daemon/log.ts");
    const offenders: string[] = [];
    for (const path of modules) {
      const text = await Bun.file(join(ROOT, path)).text();
      if (STREAM_USE.test(text)) offenders.push(path);
    }
    expect(offenders).toEqual([]);
  });

  test("the pattern catches a use in code and ignores one in a comment", () => {
    expect(STREAM_USE.test("  process.stdout.write = write;")).toBe(true);
    expect(STREAM_USE.test("const s = process.stderr;")).toBe(true);
    expect(STREAM_USE.test(" * leaves `process.stdout` alone")).toBe(false);
    expect(STREAM_USE.test("  // process.stderr is not touched")).toBe(false);
  });
});
