/** The remote-control bearer token: created once, 0600, never logged. */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { BerthError, errnoCode } from "../errors.ts";
import { writeFileAtomic } from "../platform/fs.ts";

export function readToken(path: string): string | undefined {
  try {
    const token = readFileSync(path, "utf8").trim();
    return token === "" ? undefined : token;
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw error;
  }
}

/** Returns the existing token, or creates one (first enable). */
export function ensureToken(path: string): string {
  const existing = readToken(path);
  if (existing) return existing;
  const token = randomBytes(32).toString("base64url");
  writeFileAtomic(path, `${token}\n`, 0o600);
  return token;
}

/** Constant-time comparison of an Authorization header against the token (hashing first equalizes lengths). The scheme is case-insensitive (RFC 7235 §2.1). */
export function bearerMatches(header: string | null, token: string): boolean {
  const presented = header && /^bearer /i.test(header) ? header.slice("Bearer ".length).trim() : "";
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(token).digest();
  return timingSafeEqual(a, b) && presented !== "";
}

export function parseListen(listen: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new BerthError("STATE_CORRUPT", `remoteControl.listen must look like 127.0.0.1:0 or [::1]:8080, got ${JSON.stringify(listen)}.`);
  }
  return { hostname: (match[1] ?? match[2]) as string, port };
}
