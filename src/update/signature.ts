/**
 * Checking release signatures: a `<file>.sig` holds the base64 of the raw
 * 64-byte Ed25519 signature over the exact bytes of `<file>`, made with a key
 * whose public half this binary trusts (compiled in by build.ts).
 */
import { join } from "node:path";
import { BerthError } from "../errors.ts";

// Comma-separated base64 SPKI keys, replaced by build.ts (`define`); undeclared when running from source.
declare const BERTH_COMPILED_TRUSTED_KEYS: string | undefined;

const SIGNATURE_BYTES = 64;

/** Pure: the raw signature in a .sig file, or undefined when it is not base64 of exactly 64 bytes. */
export function decodeSignature(text: string): Uint8Array | undefined {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || trimmed.length % 4 !== 0) return undefined;
  const bytes = Buffer.from(trimmed, "base64");
  return bytes.byteLength === SIGNATURE_BYTES ? new Uint8Array(bytes) : undefined;
}

/**
 * The public keys this executable trusts. Compiled: the build's list. From
 * source (tests, development): what a build run now would compile in.
 */
export async function trustedKeys(): Promise<string[]> {
  if (typeof BERTH_COMPILED_TRUSTED_KEYS === "string") return BERTH_COMPILED_TRUSTED_KEYS.split(",").filter(Boolean);
  const { signingKey, trustedKeysFor } = await import("./keys.ts");
  const root = join(import.meta.dir, "..", "..");
  return trustedKeysFor(process.env, signingKey(process.env, join(root, "dist"), false));
}

/** Whether `signatureText` is a valid signature of `data` by one of `keys`. */
export async function isSignedBy(data: Uint8Array, signatureText: string, keys: readonly string[]): Promise<boolean> {
  const signature = decodeSignature(signatureText);
  if (!signature) return false;
  for (const spki of keys) {
    try {
      const key = await crypto.subtle.importKey("spki", Buffer.from(spki, "base64"), { name: "Ed25519" }, false, ["verify"]);
      if (await crypto.subtle.verify("Ed25519", key, signature as Uint8Array<ArrayBuffer>, data as Uint8Array<ArrayBuffer>)) return true;
    } catch {
      // a key that does not import verifies nothing; the others may
    }
  }
  return false;
}

/** Throws SIGNATURE_INVALID unless `data` (fetched from `url`) carries a trusted signature. */
export async function assertSigned(url: string, data: Uint8Array, signatureText: string | undefined): Promise<void> {
  const keys = await trustedKeys();
  const what = signatureText === undefined ? "has no signature file" : decodeSignature(signatureText) ? "is not signed by a key this berth trusts" : "has a malformed signature file";
  if (signatureText !== undefined && (await isSignedBy(data, signatureText, keys))) return;
  throw new BerthError(
    "SIGNATURE_INVALID",
    `${url} ${what} (${url}.sig, ${keys.length} trusted key${keys.length === 1 ? "" : "s"}); nothing was installed. The release host may be compromised or misconfigured; a release must be signed by a key this berth build trusts.`,
  );
}
