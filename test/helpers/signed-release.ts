// Publishing signed, gzipped releases into a folder a test serves, with keys
// made and signatures computed here (node:crypto), independently of the code
// under test (Web Crypto in src/update/signature.ts).
import { generateKeyPairSync, sign, createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type TestKey = { privatePem: string; publicPem: string; spki: string };

export function newKey(): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
    spki: publicKey.export({ type: "spki", format: "der" }).toString("base64"),
  };
}

/** base64 of the raw 64-byte Ed25519 signature. */
export function signature(key: TestKey, bytes: Uint8Array | string): string {
  return sign(null, typeof bytes === "string" ? Buffer.from(bytes) : bytes, key.privatePem).toString("base64");
}

/** Writes `path` and `path.sig`. */
export function writeSigned(path: string, text: string, key: TestKey): void {
  writeFileSync(path, text);
  writeFileSync(`${path}.sig`, `${signature(key, text)}\n`);
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const gzCache = new Map<string, string>();

/** The gzip of `binary`, made once per file (fast level: tests care about bytes, not ratio). */
function gzipped(binary: string, cacheDir: string): string {
  const cached = gzCache.get(binary);
  if (cached && existsSync(cached)) return cached;
  const out = join(cacheDir, `${gzCache.size}-${binary.split("/").pop()}.gz`);
  writeFileSync(out, Bun.gzipSync(readFileSync(binary), { level: 1 }));
  gzCache.set(binary, out);
  return out;
}

export type PublishOptions = {
  key: TestKey;
  target: string;
  /** folder for gzip files made once per binary */
  cacheDir: string;
  corrupt?: boolean;
  /** also point latest.json at this version (default true) */
  latest?: boolean;
  rolloutPercent?: number;
};

/** <root>/<version>/{berth-<target>.gz, manifest.json(.sig), SHA256SUMS} and, by default, latest.json(.sig). */
export function publishSigned(root: string, version: string, binary: string, options: PublishOptions): void {
  const dir = join(root, version);
  mkdirSync(dir, { recursive: true });
  const file = `berth-${options.target}.gz`;
  const raw = readFileSync(binary);
  const gz = readFileSync(gzipped(binary, options.cacheDir));
  const asset = { target: options.target, file, sha256: sha256(gz), size: gz.byteLength, binarySha256: sha256(raw), binarySize: raw.byteLength };
  writeSigned(join(dir, "manifest.json"), `{"version":${JSON.stringify(version)},"assets":[\n${JSON.stringify(asset)}\n]}\n`, options.key);
  writeFileSync(join(dir, "SHA256SUMS"), `${asset.sha256}  ${file}\n`);
  if (options.corrupt) gz[gz.length >> 1] = (gz[gz.length >> 1] as number) ^ 0xff;
  writeFileSync(join(dir, file), gz);
  if (options.latest !== false) publishLatest(root, version, options.key, options.rolloutPercent);
}

export function publishLatest(root: string, version: string, key: TestKey, rolloutPercent?: number): void {
  writeSigned(join(root, "latest.json"), `${JSON.stringify(rolloutPercent === undefined ? { version } : { version, rolloutPercent })}\n`, key);
}
