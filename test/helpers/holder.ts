/** Runs test/fixtures/hold-lock.ts: a real flock held by another process. */
import { join } from "node:path";
import { BUN } from "./berth.ts";

const HOLDER = join(import.meta.dir, "..", "fixtures", "hold-lock.ts");
const HOLDER_READY_TIMEOUT_MS = 15_000;

export type Holder = {
  pid: number;
  send(line: string): void;
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  kill(): Promise<void>;
  exited: Promise<number>;
};

export async function holdLock(lockPath: string, reservePidFile?: string): Promise<Holder> {
  const child = Bun.spawn({
    cmd: [BUN, HOLDER, lockPath, ...(reservePidFile ? ["--reserve", reservePidFile] : [])],
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = child.stdout.getReader();
  let seen = "";
  const waitFor = async (text: string, timeoutMs = HOLDER_READY_TIMEOUT_MS) => {
    const deadline = Date.now() + timeoutMs;
    while (!seen.includes(text)) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`lock holder did not say ${text}`);
      const chunk = await Promise.race([reader.read(), Bun.sleep(remaining).then(() => undefined)]);
      if (!chunk || chunk.done) {
        if (!chunk) continue;
        throw new Error(`lock holder exited before saying ${text}`);
      }
      seen += new TextDecoder().decode(chunk.value);
    }
  };
  await waitFor("ready");
  return {
    pid: child.pid,
    send(line) {
      child.stdin.write(`${line}\n`);
      child.stdin.flush();
    },
    waitFor,
    async kill() {
      child.kill("SIGKILL");
      await child.exited;
    },
    exited: child.exited,
  };
}
