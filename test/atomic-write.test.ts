/**
 * writeFileAtomicInBackground (the wish `stop` records while it scans and signals): the target holds the
 * old content or the new, never half; it is replaced only once the promise settles; no temp file stays.
 */
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeFileAtomicInBackground } from "../src/platform/fs.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-atomic-"));
  dirs.push(dir);
  return dir;
}

test("replaces the file with mode 0600 once settled, the old content until then, and leaves no temp file", async () => {
  const dir = tempDir();
  const path = join(dir, "wanted.json");
  writeFileSync(path, "old\n");
  const pending = writeFileAtomicInBackground(path, "new\n");
  // The fsync runs on a worker thread: until it returns, readers still see the old file whole.
  expect(["old\n", "new\n"]).toContain(readFileSync(path, "utf8"));
  await pending;
  expect(readFileSync(path, "utf8")).toBe("new\n");
  expect(statSync(path).mode & 0o777).toBe(0o600);
  expect(readdirSync(dir)).toEqual(["wanted.json"]);
});

test("a failure rejects, leaves the target untouched and removes its temp file", async () => {
  const dir = tempDir();
  const path = join(dir, "missing-folder", "wanted.json");
  await expect(writeFileAtomicInBackground(path, "new\n")).rejects.toMatchObject({ code: "ENOENT" });
  expect(readdirSync(dir)).toEqual([]);
});

test("many in flight at once each land whole (the last settled wins)", async () => {
  const dir = tempDir();
  const path = join(dir, "state.json");
  const texts = Array.from({ length: 8 }, (_, i) => `${JSON.stringify({ i, pad: "x".repeat(4096) })}\n`);
  await Promise.all(texts.map((text) => writeFileAtomicInBackground(path, text)));
  expect(texts).toContain(readFileSync(path, "utf8"));
  expect(readdirSync(dir)).toEqual(["state.json"]);
});
