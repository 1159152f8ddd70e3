/**
 * A standard output shared with a parent that set O_NONBLOCK on it (ssh and Node do on their pipes) and a
 * reader that stops reading for a while (a pager, a busy `while read` loop): berth's output must wait for it
 * as a blocking write would. `logs --follow` gave its output up after 5 s of EAGAIN and ended with exit 0,
 * the lines in between lost. perl (Fcntl) sets the flag on the pipe, then execs berth with it.
 */
import { afterEach, expect, test } from "bun:test";
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BUN, MAIN, eventually, homeProcesses, homesPerTest } from "./helpers/berth.ts";

const TEST_TIMEOUT_MS = 90_000;
/** The reader's pause: longer than the 5 s after which berth used to give its output up. */
const READER_STALL_SECONDS = 8;
/** Enough to fill a pipe (64 KiB) several times over while the reader is away. */
const LINES = 600;
const LINE_PAD = "x".repeat(200);
/** Every line reaches the reader within this once it reads again (a failing run only waits it out). */
const DELIVERED_WAIT_MS = 30_000;

const newHome = homesPerTest(afterEach);

const hasPerl = Bun.which("perl") !== null;

test.skipIf(!hasPerl)("logs --follow to a non-blocking pipe whose reader pauses: every line arrives, in order, whole; berth still follows", async () => {
  const home = newHome();
  mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
  const log = home.path("daemon", "app-server.log");
  writeFileSync(log, "2026-01-01T00:00:00.000Z before\n");
  const setNonBlocking = "use Fcntl; fcntl(STDOUT, F_SETFL, fcntl(STDOUT, F_GETFL, 0) | O_NONBLOCK) or die $!; exec @ARGV or die $!";
  // The reader takes the first line (berth has read the log: new lines are followed from here), then pauses.
  const first = join(home.env.HOME as string, "first-line");
  const line = `perl -e '${setNonBlocking}' '${BUN}' '${MAIN}' logs --follow -n 1 | { IFS= read -r first; printf '%s\\n' "$first" >'${first}'; sleep ${READER_STALL_SECONDS}; cat; }`;
  const shell = Bun.spawn(["sh", "-c", line], { env: home.env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let out = "";
  // Reads until the cleanup kills the pipeline (berth, a child of the shell, holds the pipe too): never awaited.
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of shell.stdout) out += decoder.decode(chunk, { stream: true });
  })();

  // berth once perl has exec'd it (perl's own argv names --follow too, before its fcntl).
  const following = () => homeProcesses(home.home).filter((p) => p.argv[0] === BUN && p.argv.includes("--follow"));
  expect(await eventually(() => following().length === 1 && existsSync(first) && readFileSync(first, "utf8").endsWith("\n"))).toBe(true);
  expect(JSON.parse(readFileSync(first, "utf8"))).toMatchObject({ status: "logs" });
  const berth = (following()[0] as { pid: number }).pid;
  // The flag really is on berth's stdout (octal flags in fdinfo; O_NONBLOCK is 04000).
  const flags = Number.parseInt(/flags:\s*(\d+)/.exec(readFileSync(`/proc/${berth}/fdinfo/1`, "utf8"))?.[1] ?? "0", 8);
  expect(flags & 0o4000).toBe(0o4000);

  for (let i = 0; i < LINES; i += 1) appendFileSync(log, `2026-01-01T00:00:00.000Z line ${i} ${LINE_PAD}\n`);
  expect(await eventually(() => out.includes(`line ${LINES - 1} `), DELIVERED_WAIT_MS)).toBe(true);
  // Still following after the pause.
  appendFileSync(log, "2026-01-01T00:00:00.000Z after the pause\n");
  expect(await eventually(() => out.includes("after the pause"), DELIVERED_WAIT_MS)).toBe(true);

  const lines = out.trimEnd().split("\n");
  const parsed = lines.map((text) => JSON.parse(text) as { line?: string; status?: string });
  const numbers = parsed.flatMap((entry) => /line (\d+) /.exec(entry.line ?? "")?.[1] ?? []).map(Number);
  expect(numbers).toEqual(Array.from({ length: LINES }, (_, i) => i));

  // berth and the reader's cat and sleep carry this home's BERTH_HOME: the cleanup ends them (by pid).
  shell.kill("SIGKILL");
}, TEST_TIMEOUT_MS);
