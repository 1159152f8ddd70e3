#!/usr/bin/env bun
/**
 * Records where berth's commands spend their bytecode, for `bun build --bytecode-order` (build.ts): a fresh
 * compile (no profile) runs in a temporary BERTH_HOME the way clients run it — `version`, `status`, `start`
 * (and the app-server it launches), `stop`, `restart`, `connect` — each with BUN_BYTECODE_ORDER_OUT set, and the
 * profiles are kept in bench/order/, most used first (see ORDER_FILES in build.ts). The profiles hold hashes of
 * functions, not code, and a profile from an older build still applies (functions changed since are laid out
 * after the recorded ones), so they are recorded again only now and then:
 *
 *   bun run bench/record-order.ts
 */
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ORDER_DIR, ORDER_FILES } from "../build.ts";
import { makeBenchHome } from "./harness.ts";

const scratch = mkdtempSync(join(tmpdir(), "berth-order-"));
const bench = await makeBenchHome("berth-order-home-", undefined, { bytecodeOrder: false });
try {
  /** Runs `berth <args>` with the recorder on; returns the pids whose profiles belong to `name`. */
  const record = async (name: string, args: string[], stdin?: string) => {
    const out = join(scratch, name);
    mkdirSync(out);
    const child = Bun.spawn({
      cmd: [bench.binary, ...args],
      env: { ...bench.env, BUN_BYTECODE_ORDER_OUT: join(out, "%p.order") },
      stdin: stdin === undefined ? "ignore" : new Blob([stdin]),
      stdout: "pipe",
      stderr: "pipe",
    });
    const [stdout, , code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
    if (code !== 0) throw new Error(`berth ${args.join(" ")} exited ${code}: ${stdout}`);
    return { out, pid: child.pid, stdout };
  };
  const keep = (from: string, pid: number, name: string) => renameSync(join(from, `${pid}.order`), join(ORDER_DIR, `${name}.order`));
  rmSync(ORDER_DIR, { recursive: true, force: true });
  mkdirSync(ORDER_DIR, { recursive: true });

  const started = await record("start", ["start"]);
  keep(started.out, started.pid, "start");
  const serverPid = (JSON.parse(started.stdout) as { pid: number }).pid;
  const version = await record("version", ["version"]);
  keep(version.out, version.pid, "version");
  const status = await record("status", ["status"]);
  keep(status.out, status.pid, "status");
  const initialize = `${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { clientInfo: { name: "record-order", version: "0" } } })}\n`;
  const connect = await record("connect", ["connect"], initialize);
  keep(connect.out, connect.pid, "connect");
  const stopped = await record("stop", ["stop"]);
  keep(stopped.out, stopped.pid, "stop");
  // The app-server writes its profile when it exits, i.e. during that stop; it inherited start's recorder.
  keep(started.out, serverPid, "serve");
  for (const name of ORDER_FILES) if (!readdirSync(ORDER_DIR).includes(`${name}.order`)) throw new Error(`no profile for ${name}`);
  console.log(`recorded ${ORDER_FILES.join(", ")} into ${ORDER_DIR}`);
} finally {
  await bench.cleanup();
  rmSync(scratch, { recursive: true, force: true });
}
