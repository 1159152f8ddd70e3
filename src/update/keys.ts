/**
 * Release signing keys on the build side: the signing key (BERTH_SIGNING_KEY,
 * or a development key generated once into dist/), the public keys a build
 * trusts, and signing. Keys travel as base64 of their SPKI DER form, the
 * shape that is compiled into the binary and baked into install.sh.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const DEV_KEY_FILE = "dev-signing-key.pem";

export type SigningKey = { pem: string; path: string; dev: boolean };

/** The private key named by BERTH_SIGNING_KEY, else dist/dev-signing-key.pem (created once when `create`). */
export function signingKey(env: Record<string, string | undefined>, distDir: string, create: boolean): SigningKey | undefined {
  if (env.BERTH_SIGNING_KEY) {
    const path = env.BERTH_SIGNING_KEY;
    const pem = readFileSync(path, "utf8");
    if (createPrivateKey(pem).asymmetricKeyType !== "ed25519") throw new Error(`BERTH_SIGNING_KEY=${path} is not an Ed25519 private key`);
    return { pem, path, dev: false };
  }
  const path = join(distDir, DEV_KEY_FILE);
  try {
    return { pem: readFileSync(path, "utf8"), path, dev: true };
  } catch (error) {
    if ((error as { code?: string }).code !== "ENOENT" || !create) return undefined;
  }
  mkdirSync(distDir, { recursive: true });
  const pem = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  // Create once even when two builds race: write a temp file, link it into place, keep whichever won.
  const temp = `${path}.tmp-${process.pid}`;
  writeFileSync(temp, pem, { mode: 0o600 });
  try {
    linkSync(temp, path);
  } catch (error) {
    if ((error as { code?: string }).code !== "EEXIST") throw error;
  } finally {
    rmSync(temp, { force: true });
  }
  return { pem: readFileSync(path, "utf8"), path, dev: true };
}

/** base64 SPKI DER of a PEM key: the public half of a private key, or a public key as is. */
export function publicKeyOf(pem: string): string {
  const key = pem.includes("PRIVATE KEY") ? createPublicKey(createPrivateKey(pem)) : createPublicKey(pem);
  if (key.asymmetricKeyType !== "ed25519") throw new Error("not an Ed25519 key");
  return key.export({ type: "spki", format: "der" }).toString("base64");
}

/** What a build trusts: the public half of the signing key, plus every PEM in BERTH_TRUSTED_KEYS (`:`-separated paths). */
export function trustedKeysFor(env: Record<string, string | undefined>, signing: SigningKey | undefined): string[] {
  const keys = signing ? [publicKeyOf(signing.pem)] : [];
  for (const path of (env.BERTH_TRUSTED_KEYS ?? "").split(":").filter(Boolean)) {
    let pem: string;
    try {
      pem = readFileSync(path, "utf8");
    } catch (error) {
      throw new Error(`BERTH_TRUSTED_KEYS names ${path}, which cannot be read: ${(error as Error).message}`);
    }
    keys.push(publicKeyOf(pem));
  }
  return [...new Set(keys)];
}

/** base64 of the raw 64-byte Ed25519 signature over exactly `data`. */
export async function signBytes(privatePem: string, data: Uint8Array): Promise<string> {
  const der = createPrivateKey(privatePem).export({ type: "pkcs8", format: "der" });
  const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
  return Buffer.from(await crypto.subtle.sign("Ed25519", key, data as Uint8Array<ArrayBuffer>)).toString("base64");
}
