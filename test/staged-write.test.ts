/**
 * stageWrite on real files: what a reader of the target sees before and after the commit, that the room a
 * record stages is cut to the record, that text beyond ASCII arrives byte for byte, and that an abandoned or
 * failed write leaves no temp sibling behind. (A full disk is test/full-disk.test.ts.)
 */
import { afterEach, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stageWrite, writeFileAtomic } from "../src/platform/fs.ts";
import { tempDirsPerTest } from "./helpers/berth.ts";

const folder = tempDirsPerTest(afterEach, "berth-staged-");

test("staged content: the target keeps its old bytes until commit, then has the new ones; no temp is left", () => {
  const dir = folder();
  const target = join(dir, "wanted.json");
  writeFileSync(target, "old\n");
  const staged = stageWrite(target, "néw — ✓\n");
  expect(readFileSync(target, "utf8")).toBe("old\n");
  expect(readdirSync(dir).length).toBe(2);
  staged.commit();
  expect(readFileSync(target, "utf8")).toBe("néw — ✓\n");
  expect(readdirSync(dir)).toEqual(["wanted.json"]);
  expect(statSync(target).mode & 0o777).toBe(0o600);
  expect(() => staged.commit()).toThrow(/already committed or abandoned/);
});

test("staged room: the record written into it is all the file holds, multi-byte text included", () => {
  const dir = folder();
  const target = join(dir, "app-server.pid");
  const staged = stageWrite(target, 256);
  const record = '{"pid":4242,"processStartTime":"ü/123"}\n';
  staged.commit(record, { durable: false });
  expect(readFileSync(target, "utf8")).toBe(record);
  expect(statSync(target).size).toBe(Buffer.byteLength(record));
});

test("a record longer than its room is written whole", () => {
  const dir = folder();
  const target = join(dir, "long");
  const text = "x".repeat(1000);
  stageWrite(target, 16).commit(text);
  expect(readFileSync(target, "utf8")).toBe(text);
});

test("abandon removes the temp, leaves the target, and makes a later commit an error", () => {
  const dir = folder();
  const target = join(dir, "settings.json");
  writeFileAtomic(target, "{}\n");
  const staged = stageWrite(target, "{\"a\":1}\n");
  staged.abandon();
  staged.abandon();
  expect(readdirSync(dir)).toEqual(["settings.json"]);
  expect(readFileSync(target, "utf8")).toBe("{}\n");
  expect(() => staged.commit()).toThrow(/already committed or abandoned/);
});

test("a commit whose rename fails removes its temp and names the target", () => {
  const dir = folder();
  // A folder where the file belongs: rename(2) of a file over it fails with EISDIR.
  const target = join(dir, "taken");
  mkdirSync(target);
  const staged = stageWrite(target, "x\n");
  let error: unknown;
  try {
    staged.commit();
  } catch (caught) {
    error = caught;
  }
  expect((error as { code?: string }).code).toBe("EISDIR");
  expect((error as { path?: string }).path).toBe(target);
  expect(readdirSync(dir)).toEqual(["taken"]);
});
