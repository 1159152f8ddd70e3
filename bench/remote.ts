#!/usr/bin/env bun
/**
 * `berth remote` against plain ssh, both through a real pseudo-terminal and a
 * real sshd on loopback, with the compiled binary on both ends (the far side
 * already bootstrapped: its app-server runs):
 *   - first prompt: `berth remote HOST shell NEW` vs `ssh -tt HOST` (login shell)
 *   - echo round trip of one keystroke: `cat` in a berth shell vs `ssh -tt HOST cat`
 *   - resume: the ssh under `remote shell` is SIGKILLed; time until a key typed
 *     right after it is echoed again (the reconnect, re-attach and replay)
 * Prints a markdown table with the targets of issue 13; never fails a build.
 * Run: `bun run bench/remote.ts`. Env: BENCH_RUNS (default 15), BENCH_KEYS (default 100).
 */
import { chmodSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compile } from "../build.ts";
import { installRelease, killProcessesOf } from "../test/helpers/berth.ts";
import { PtyProcess } from "../test/helpers/pty.ts";
import { connectSshUnder, sshdUnavailable, startSshd } from "../test/helpers/sshd.ts";

const VERSION = "0.0.0-bench";
const RUNS = Number(process.env.BENCH_RUNS) || 15;
const KEYS = Number(process.env.BENCH_KEYS) || 100;
const RESUMES = Math.min(RUNS, 10);
const PROMPT = "far$ ";
const STEP_TIMEOUT_MS = 30_000;

type Stats = { median: number; p90: number; min: number };
function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
  return { median: at(0.5), p90: at(0.9), min: sorted[0] as number };
}
const fmt = (s: Stats) => `${s.median.toFixed(2)} | ${s.p90.toFixed(2)} | ${s.min.toFixed(2)}`;

const reason = sshdUnavailable();
if (reason) {
  console.log(`remote bench skipped: ${reason}`);
  process.exit(0);
}

const base = mkdtempSync(join(tmpdir(), "berth-bench-remote-"));
const binary = join(base, "berth");
await compile({ version: VERSION, outfile: binary });
const host = await startSshd();
const far = installRelease(host.farBerthHome, VERSION, "");
copyFileSync(binary, far);
chmodSync(far, 0o755);
writeFileSync(join(host.farHome, ".bash_profile"), `PS1='${PROMPT}'\nexport PS1\n`);
const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: base, BERTH_SSH: host.sshCommand, NO_COLOR: "1", TERM: "xterm" };
const ssh = ["ssh", "-F", host.configPath, "-tt", host.alias];
const ptys: PtyProcess[] = [];
const pty = (cmd: string[]) => {
  const p = new PtyProcess(cmd, env);
  ptys.push(p);
  return p;
};

async function timeToPrompt(cmd: string[]): Promise<number> {
  const started = performance.now();
  const p = pty(cmd);
  await p.until(PROMPT, 0, STEP_TIMEOUT_MS);
  const ms = performance.now() - started;
  p.type("exit\r");
  await p.exited(STEP_TIMEOUT_MS);
  p.kill();
  return ms;
}

/** Starts `cat` behind `p` and waits until it echoes; returns the per-key round trips. */
async function echoTimes(p: PtyProcess): Promise<number[]> {
  // Keys typed while a shell is still handing the terminal to cat can be taken by the shell: retry until cat answers.
  for (let attempt = 0; ; attempt += 1) {
    const mark = p.output.length;
    p.type("ready\r");
    try {
      await p.until("\nready", mark, 1_000);
      break;
    } catch (error) {
      if (attempt > 20) throw error;
    }
  }
  const times: number[] = [];
  for (let i = 0; i < KEYS; i += 1) {
    const from = p.output.length;
    const key = String.fromCharCode(97 + (i % 26));
    const started = performance.now();
    p.type(key);
    await p.until(key, from, STEP_TIMEOUT_MS);
    times.push(performance.now() - started);
  }
  return times;
}

const rows: string[] = [];
try {
  // Bootstrapped host: the app-server is up before anything is timed.
  const warm = Bun.spawnSync([binary, "remote", host.alias, "ps"], { env });
  if (warm.exitCode !== 0) throw new Error(`warm-up failed: ${warm.stdout}`);

  const berthPrompt: number[] = [];
  const sshPrompt: number[] = [];
  for (let i = 0; i < RUNS; i += 1) {
    sshPrompt.push(await timeToPrompt(ssh));
    berthPrompt.push(await timeToPrompt([binary, "remote", host.alias, "shell", `bench-${i}`]));
  }

  const sshCat = pty([...ssh, "cat"]);
  const sshEcho = await echoTimes(sshCat);
  sshCat.kill();
  const shell = pty([binary, "remote", host.alias, "shell", "bench-echo"]);
  await shell.until(PROMPT, 0, STEP_TIMEOUT_MS);
  shell.type("cat\r");
  const berthEcho = await echoTimes(shell);

  const resume: number[] = [];
  for (let i = 0; i < RESUMES; i += 1) {
    const pid = connectSshUnder(shell.pid);
    if (!pid) throw new Error("no ssh under the berth client");
    const from = shell.output.length;
    const key = String.fromCharCode(65 + i);
    const started = performance.now();
    process.kill(pid, "SIGKILL");
    shell.type(key);
    await shell.until(key, from, STEP_TIMEOUT_MS);
    resume.push(performance.now() - started);
    await shell.until("reconnected", from, STEP_TIMEOUT_MS);
  }
  shell.kill();

  const prompt = { berth: stats(berthPrompt), ssh: stats(sshPrompt) };
  const echo = { berth: stats(berthEcho), ssh: stats(sshEcho) };
  rows.push(
    `| first prompt, plain \`ssh -tt\` | ${fmt(prompt.ssh)} | |`,
    `| first prompt, \`remote shell\` | ${fmt(prompt.berth)} | ≤ 1.5× ssh: ${(prompt.berth.median / prompt.ssh.median).toFixed(2)}× |`,
    `| echo, \`ssh -tt host cat\` | ${fmt(echo.ssh)} | |`,
    `| echo, \`cat\` in \`remote shell\` | ${fmt(echo.berth)} | ≤ 1.2× ssh: ${(echo.berth.median / echo.ssh.median).toFixed(2)}× |`,
    `| resume after ssh SIGKILL | ${fmt(stats(resume))} | ≤ 1000 ms |`,
  );
} catch (error) {
  rows.push(`| failed | ${(error as Error).message} | | | |`);
} finally {
  for (const p of ptys) p.kill();
  killProcessesOf(host.farBerthHome);
  await host.stop();
  killProcessesOf(host.farBerthHome);
  rmSync(base, { recursive: true, force: true });
}
console.log(`remote bench (${RUNS} prompts, ${KEYS} keys, ${RESUMES} resumes; ms)\n`);
console.log("| what | median | p90 | min | target |\n| --- | --- | --- | --- | --- |");
for (const row of rows) console.log(row);
