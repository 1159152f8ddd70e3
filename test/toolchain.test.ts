/**
 * package.json keeps `npm install && npm test` working for a newcomer: npm 11
 * blocks dependency install scripts not approved in `allowScripts`, and bun's
 * postinstall is what puts the real Bun binary in place.
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8"));

/** Pure: is `name@version` approved by an allowScripts table (name-only, or pinned to that version)? */
function approved(allow: Record<string, unknown>, name: string, version: string): boolean {
  return allow[name] === true || allow[`${name}@${version}`] === true;
}

test("every locked dependency with an install script is approved in allowScripts", () => {
  const withScripts = Object.entries(lock.packages as Record<string, { version: string; hasInstallScript?: boolean }>)
    .filter(([path, entry]) => path !== "" && entry.hasInstallScript)
    .map(([path, entry]) => ({ name: path.replace(/^.*node_modules\//, ""), version: entry.version }));
  expect(withScripts.map((p) => p.name)).toContain("bun");
  for (const { name, version } of withScripts) expect({ name, approved: approved(pkg.allowScripts ?? {}, name, version) }).toEqual({ name, approved: true });
});

test("the approval stays in step with the pinned bun", () => {
  const pinned = pkg.devDependencies.bun as string;
  expect(pinned).toMatch(/^\d+\.\d+\.\d+$/); // exact: a name-only approval covers this one version
  expect(lock.packages["node_modules/bun"].version).toBe(pinned);
  expect(pkg.devDependencies["bun-types"]).toBe(pinned);
  for (const key of Object.keys(pkg.allowScripts ?? {})) {
    if (key.startsWith("bun@")) expect(key).toBe(`bun@${pinned}`);
  }
});

test("engines.node asks for a maintained Node", () => {
  const minimum = Number(/^>=(\d+)/.exec(pkg.engines.node)?.[1]);
  expect(minimum).toBeGreaterThanOrEqual(20);
});
