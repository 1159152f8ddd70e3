/**
 * Where remote control listens. A client's SSH forward points at one port, so
 * the first port bound for `…:0` is saved in `daemon/remote-control.listen`
 * and asked for again by every later app-server (restart, update). A listen
 * address other than loopback is refused unless `remoteControl.tls` names a
 * certificate and key; the app-server then serves TLS (wss://).
 */
import { join } from "node:path";
import { BerthError, isBerthError } from "../errors.ts";
import { readStateFile, writeFileAtomic } from "../platform/fs.ts";
import { parseListen } from "./token.ts";

export type RemoteTls = { cert: string; key: string };
export type RemoteListenPlan = { listen: string; tls?: RemoteTls; reused: boolean };

export function savedListenPath(daemonDir: string): string {
  return join(daemonDir, "remote-control.listen");
}

/** A dotted-quad IPv4 address as node:net's isIP accepts it (no leading zeros). */
const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * Pure: 127.0.0.0/8, ::1 (also v4-mapped) and localhost. No node:net here: the
 * app-server loads this module, and node:net costs it ~6.7 MB RSS and ~1× the
 * floor's start-up (bench/README.md).
 */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^::ffff:/, "");
  if (host === "localhost" || host === "::1") return true;
  return IPV4.test(host) && host.startsWith("127.");
}

function tlsOf(value: unknown): RemoteTls | undefined {
  const tls = value as { cert?: unknown; key?: unknown } | null | undefined;
  if (tls && typeof tls.cert === "string" && tls.cert !== "" && typeof tls.key === "string" && tls.key !== "") {
    return { cert: tls.cert, key: tls.key };
  }
  return undefined;
}

/**
 * Pure: what to bind, from the settings and the saved listen address.
 * A saved port is reused only for the same host and a settings port of 0.
 */
export function planRemoteListen(input: { listen: string; tls: unknown; saved: string | undefined; settingsFile: string }): RemoteListenPlan {
  const { hostname, port } = parseListen(input.listen);
  const tls = tlsOf(input.tls);
  if (input.tls !== undefined && tls === undefined) {
    throw new BerthError("STATE_CORRUPT", `${input.settingsFile}: remoteControl.tls must be {"cert": "/path/cert.pem", "key": "/path/key.pem"}. Fix the file; it was left untouched.`);
  }
  if (!isLoopbackHost(hostname) && !tls) {
    throw new BerthError(
      "STATE_CORRUPT",
      `${input.settingsFile}: remoteControl.listen ${input.listen} is not a loopback address, and remote control over the network needs TLS. ` +
        `Set remoteControl.tls to {"cert": "/path/cert.pem", "key": "/path/key.pem"}, or listen on 127.0.0.1 and forward the port over SSH.`,
    );
  }
  if (port === 0 && input.saved !== undefined) {
    try {
      const saved = parseListen(input.saved);
      if (saved.hostname === hostname && saved.port > 0) return { listen: input.saved, ...(tls ? { tls } : {}), reused: true };
    } catch {
      // a damaged saved address is replaced after this bind
    }
  }
  return { listen: input.listen, ...(tls ? { tls } : {}), reused: false };
}

/**
 * The address a previous server bound, or undefined: missing, damaged, or not a plain file (a FIFO would block
 * the server's start for ever, a link to /dev/zero never ends). It is only a wish for the same port: anything
 * unusable means a fresh port, and saving that replaces the file by rename, never through it.
 */
export function readSavedListen(path: string): string | undefined {
  let text: string | undefined;
  try {
    text = readStateFile(path);
  } catch (error) {
    if (isBerthError(error, "UNSAFE_STATE")) return undefined;
    throw error;
  }
  if (text === undefined) return undefined;
  try {
    const value = JSON.parse(text) as { listen?: unknown } | null;
    return typeof value?.listen === "string" ? value.listen : undefined;
  } catch {
    return undefined;
  }
}

/** Pure: `ws://127.0.0.1:40279/` → `127.0.0.1:40279` (brackets kept for IPv6). */
export function listenOfUrl(url: string): string | undefined {
  const match = /^wss?:\/\/(\[[^\]]+\]|[^/:]+):(\d+)\/?$/.exec(url);
  return match ? `${match[1]}:${match[2]}` : undefined;
}

export function saveListen(path: string, listen: string): void {
  writeFileAtomic(path, `${JSON.stringify({ listen })}\n`);
}
