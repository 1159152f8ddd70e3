/** The remote-control bearer token: created once, 0600, never logged. */
import { closeSync, fchmodSync, fstatSync, readFileSync } from "node:fs";
import { warn } from "../diagnostics.ts";
import { BerthError } from "../errors.ts";
import { openExistingStateFile, writeFileAtomic } from "../platform/fs.ts";

/**
 * Reads the token without following a symlink; a token others could read
 * (say 0644, made by hand or by an old tool) is tightened to 0600 before use,
 * and one owned by someone else is refused.
 */
export function readToken(path: string): string | undefined {
  const fd = openExistingStateFile(path);
  if (fd === undefined) return undefined;
  try {
    const stat = fstatSync(fd);
    const uid = process.getuid?.();
    if (uid !== undefined && stat.uid !== uid) {
      throw new BerthError("UNSAFE_STATE", `${path} is owned by uid ${stat.uid}, not by you (uid ${uid}); berth will not use that token. Remove it and enable remote control again.`);
    }
    if ((stat.mode & 0o077) !== 0) {
      fchmodSync(fd, 0o600);
      warn(`${path} was readable by others (mode ${(stat.mode & 0o777).toString(8)}); tightened it to 0600. Consider rotating the token.`);
    }
    const token = readFileSync(fd, "utf8").trim();
    return token === "" ? undefined : token;
  } finally {
    closeSync(fd);
  }
}

/** Returns the existing token, or creates one (first enable). */
export function ensureToken(path: string): string {
  const existing = readToken(path);
  if (existing) return existing;
  const token = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
  writeFileAtomic(path, `${token}\n`, 0o600);
  return token;
}

/** Constant-time comparison of an Authorization header against the token (hashing first equalizes lengths). The scheme is case-insensitive (RFC 7235 §2.1). */
export function bearerMatches(header: string | null, token: string): boolean {
  const presented = header && /^bearer /i.test(header) ? header.slice("Bearer ".length).trim() : "";
  const a = sha256(presented);
  const b = sha256(token);
  // Fixed-length digests compared without an early exit: the time does not depend on where they differ.
  let difference = 0;
  for (let i = 0; i < a.length; i += 1) difference |= (a[i] as number) ^ (b[i] as number);
  return difference === 0 && presented !== "";
}

function sha256(text: string): Uint8Array {
  return new Bun.CryptoHasher("sha256").update(text).digest() as Uint8Array;
}

export function parseListen(listen: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new BerthError("STATE_CORRUPT", `remoteControl.listen must look like 127.0.0.1:0 or [::1]:8080, got ${JSON.stringify(listen)}.`);
  }
  return { hostname: (match[1] ?? match[2]) as string, port };
}
