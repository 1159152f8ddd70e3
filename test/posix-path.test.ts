/** src/platform/posix-path.ts against node:path (POSIX) on awkward inputs: the same answer for each. */
import { expect, test } from "bun:test";
import * as nodePath from "node:path";
import * as ours from "../src/platform/posix-path.ts";

const inputs = [
  "", ".", "..", "/", "//", "///a//b/", "a", "a/", "a//b", "./a", "../a", "a/..", "a/../..", "/..", "/../a", "/a/b/../../..",
  "//a", "a//b//", "/a//", "//a//b", "a/./b/.", "/a/b/c/", "/a/b/c//", "foo.txt", "/x/foo.tar.gz", ".hidden", "a/.hidden/", "~/x", "a b/c d", "/ä/ö",
];

test("normalize, isAbsolute, dirname, basename", () => {
  for (const path of inputs) {
    expect({ path, normalize: ours.normalize(path) }).toEqual({ path, normalize: nodePath.posix.normalize(path) });
    expect({ path, isAbsolute: ours.isAbsolute(path) }).toEqual({ path, isAbsolute: nodePath.posix.isAbsolute(path) });
    expect({ path, dirname: ours.dirname(path) }).toEqual({ path, dirname: nodePath.posix.dirname(path) });
    expect({ path, basename: ours.basename(path) }).toEqual({ path, basename: nodePath.posix.basename(path) });
  }
});

test("join, resolve, relative over pairs and triples", () => {
  for (const a of inputs) {
    for (const b of inputs) {
      expect({ a, b, join: ours.join(a, b) }).toEqual({ a, b, join: nodePath.posix.join(a, b) });
      expect({ a, b, resolve: ours.resolve(a, b) }).toEqual({ a, b, resolve: nodePath.posix.resolve(a, b) });
      expect({ a, b, relative: ours.relative(a, b) }).toEqual({ a, b, relative: nodePath.posix.relative(a, b) });
    }
    expect({ a, resolve: ours.resolve(a) }).toEqual({ a, resolve: nodePath.posix.resolve(a) });
    expect(ours.join("/home", a, "x")).toBe(nodePath.posix.join("/home", a, "x"));
  }
  expect(ours.join()).toBe(nodePath.posix.join());
  expect(ours.resolve()).toBe(nodePath.posix.resolve());
  expect(ours.sep).toBe(nodePath.posix.sep);
});
