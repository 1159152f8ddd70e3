/**
 * What the README tells newcomers and clients is true: the install form it
 * recommends reports a failed download of install.sh as an error object, and
 * it does not send people to a file that does not ship with the repository.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseLastJsonLine, runProcess } from "./helpers/berth.ts";
import { serveDirectory } from "./helpers/release-server.ts";

const README = readFileSync(join(import.meta.dir, "..", "README.md"), "utf8");
const dir = mkdtempSync(join(tmpdir(), "berth-readme-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The README's recommended client install command, with <base> replaced. */
function recommended(base: string): string {
  const line = README.split("\n").find((l) => l.startsWith('sh -c "$(curl -fsSL <base>/install.sh'));
  if (!line) throw new Error("README lost its `sh -c \"$(curl …)\"` install form");
  return line.replaceAll("<base>", base);
}

for (const shell of ["sh", "dash", "bash", "zsh"]) {
  test.skipIf(!Bun.which(shell))(`the recommended form under ${shell}: a failed download of install.sh is an error object, exit 1`, async () => {
    const server = await serveDirectory(dir);
    const url = server.url;
    await server.stop();
    const r = await runProcess([shell, "-c", recommended(url)], { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir });
    expect(r.code).toBe(1);
    expect(parseLastJsonLine(r.stdout)).toEqual({ status: "error", error: { code: "DOWNLOAD_FAILED", message: "could not download install.sh" } });
  });
}

test("the recommended form runs the downloaded install.sh with its arguments", async () => {
  writeFileSync(join(dir, "install.sh"), 'printf \'{"ran":"%s"}\\n\' "$*"\n');
  const server = await serveDirectory(dir);
  try {
    const r = await runProcess(["sh", "-c", recommended(server.url)], { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir });
    expect(r.code).toBe(0);
    expect(r.json).toEqual({ ran: "--bootstrap" });
  } finally {
    await server.stop();
  }
});

test("no pointer to ../shared/SPEC.md as if it shipped with the repository", () => {
  expect(README).not.toContain("../shared/SPEC.md");
});

test("the first screen keeps the two commands; npm run here says what it changes and how to undo it", () => {
  const firstScreen = README.split("\n").slice(0, 30).join("\n");
  expect(firstScreen).toContain("npm install && npm run here");
  expect(firstScreen).toContain("npm install && npm test");
  for (const fact of ["~/.berth", "Two resident processes", "dist/release", "~/.bashrc", "~/.profile", "Undo"]) expect(README).toContain(fact);
});
