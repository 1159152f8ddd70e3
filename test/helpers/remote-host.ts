/**
 * A far host for the `berth remote` suites: a real sshd on loopback (sshd.ts)
 * whose berth is installed (the source launcher) and whose login shell has a
 * known prompt, the client's environment for it, and `berth remote …` run on
 * a real pseudo-terminal. Everything started is recorded for `cleanUp`.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type Connection } from "../../src/client/connection.ts";
import { BUN, installRelease, killProcessesOf, MAIN } from "./berth.ts";
import { PtyProcess } from "./pty.ts";
import { startSshd, type SshHost } from "./sshd.ts";
import type { Follower } from "../../src/client/follow.ts";

/** A tracked client's kill() may be a graceful end (a follower's detach): after this long the hosts stop anyway. */
const TRACKED_END_WAIT_MS = 40_000;

/** What `track` takes: kill() ends it; a promise it returns is awaited (bounded) before the hosts stop. */
type Tracked = { kill(): unknown };

export type RemoteHosts = {
  /** A host whose berth is installed and whose login shell prompts `far$ `. */
  newHost(bashrc?: string): Promise<SshHost>;
  /** `berth remote …` on a pty, followed by the exit status and the terminal's mode as the shell sees it afterwards. */
  ptyClient(host: SshHost, args: string[], env?: Record<string, string>): PtyProcess;
  /** Records something with a kill() to end after the test, before the hosts stop (a returned promise is awaited, bounded). */
  track(client: Tracked): void;
  /** Records a follower: detached after the test (if it has not finished), so a failed test leaves no ssh and no reconnect loop. */
  trackFollower(follower: Follower): Follower;
  /** Ends every client, then every host (and what its berth started). */
  cleanUp(): Promise<void>;
};

export const remoteClientEnv = (host: SshHost): Record<string, string> => ({
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: host.dir,
  BERTH_SSH: host.sshCommand,
  NO_COLOR: "1",
  TERM: "xterm",
});

/** Runs `use` on a fresh connection to `host` (the client library's, over its ssh), closed afterwards. */
export async function withConnection<T>(host: SshHost, use: (conn: Connection) => Promise<T>): Promise<T> {
  const conn = await connect(host.alias, { env: remoteClientEnv(host) });
  try {
    return await use(conn);
  } finally {
    await conn.close();
  }
}

export function remoteHosts(): RemoteHosts {
  const hosts: SshHost[] = [];
  const clients: Tracked[] = [];
  return {
    async newHost(bashrc = 'echo "noise from .bashrc before berth connect"') {
      const host = await startSshd({ bashrc });
      hosts.push(host);
      installRelease(host.farBerthHome);
      writeFileSync(join(host.farHome, ".bash_profile"), "PS1='far$ '\nexport PS1\n");
      return host;
    },
    ptyClient(host, args, env = {}) {
      const quoted = [BUN, MAIN, "remote", host.alias, ...args].map((word) => `'${word}'`).join(" ");
      const client = new PtyProcess(["/bin/sh", "-c", `${quoted}; echo "client-exit=$?"; stty -a`], { ...remoteClientEnv(host), ...env });
      clients.push(client);
      return client;
    },
    track(client) {
      clients.push(client);
    },
    trackFollower(follower) {
      clients.push({ kill: () => follower.detach() });
      return follower;
    },
    async cleanUp() {
      const ending = clients.splice(0).map((client) => client.kill());
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([Promise.allSettled(ending), new Promise((resolve) => (timer = setTimeout(resolve, TRACKED_END_WAIT_MS)))]);
      clearTimeout(timer);
      for (const host of hosts.splice(0)) {
        killProcessesOf(host.farBerthHome);
        await host.stop();
        killProcessesOf(host.farBerthHome);
      }
    },
  };
}
