/**
 * Reading a release host: latest.json, <version>/manifest.json and the asset,
 * over http(s) or file://, each with a deadline and a size bound. Metadata is
 * signature-checked before it is used; the asset streams download → gunzip →
 * SHA-256 → file and never sits in memory whole.
 */
import { closeSync, fsyncSync, openSync, writeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { BerthError, describeError, isBerthError } from "../errors.ts";
import { isVersion } from "../install/semver.ts";
import type { Target } from "../platform/paths.ts";
import { assertSigned } from "./signature.ts";

/** A metadata fetch (latest.json, manifest, .sig) may take this long. */
export const METADATA_TIMEOUT_MS = 30_000;
/** An asset download may take this long (50+ MB on a slow link). */
export const ASSET_TIMEOUT_MS = 15 * 60_000;
/** latest.json and manifest.json are a few hundred bytes; anything past this is refused unread. */
export const METADATA_MAX_BYTES = 1024 * 1024;
/** A .sig file is 88 characters of base64. */
const SIGNATURE_MAX_BYTES = 4096;

export type Asset = { target: string; file: string; sha256: string; size: number; binarySha256: string; binarySize: number };
export type Manifest = { version: string; assets: Asset[] };
export type Latest = { version: string; rolloutPercent?: number };
/** What a conditional GET of latest.json needs, kept in the keeper's state after a verified fetch. */
export type LatestValidators = { url: string; etag?: string; lastModified?: string; latest: Latest };

export function joinUrl(base: string, path: string): string {
  return `${base.replace(/\/+$/, "")}/${path}`;
}

type Opened = { status: number; body: ReadableStream<Uint8Array>; headers: Headers; length?: number };

/** Opens `url` for streaming; 404 → undefined (the caller decides what missing means). */
async function open(url: string, timeoutMs: number, headers: Record<string, string> = {}): Promise<Opened | undefined> {
  try {
    if (url.startsWith("file://")) {
      const file = Bun.file(fileURLToPath(url));
      if (!(await file.exists())) return undefined;
      return { status: 200, body: file.stream(), headers: new Headers(), length: file.size };
    }
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: "follow", headers });
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok && response.status !== 304) {
      await response.body?.cancel();
      throw new Error(`HTTP ${response.status}`);
    }
    const declared = Number(response.headers.get("content-length") ?? Number.NaN);
    return { status: response.status, body: response.body ?? new Response("").body!, headers: response.headers, ...(Number.isFinite(declared) ? { length: declared } : {}) };
  } catch (error) {
    throw new BerthError("DOWNLOAD_FAILED", `could not download ${url}: ${describeError(error)}; check releaseBaseUrl and the network.`);
  }
}

/** Reads a whole body of at most `max` bytes; a longer one is refused as soon as it shows. */
async function readCapped(url: string, opened: Opened, max: number): Promise<Uint8Array> {
  const tooBig = () => new BerthError("DOWNLOAD_FAILED", `${url} is larger than ${max} bytes, far more than release metadata needs; the release host is misconfigured or hostile.`);
  if (opened.length !== undefined && opened.length > max) {
    await opened.body.cancel();
    throw tooBig();
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = opened.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > max) throw tooBig();
      chunks.push(value);
    }
  } catch (error) {
    if (isBerthError(error)) throw error;
    throw new BerthError("DOWNLOAD_FAILED", `could not download ${url}: ${describeError(error)}`);
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks);
}

/** The body of `url` (already opened: undefined means 404) and `url.sig`, the signature checked before the bytes are returned. */
async function readSigned(url: string, body: Opened | undefined): Promise<Uint8Array> {
  if (!body) throw new BerthError("DOWNLOAD_FAILED", `could not download ${url}: HTTP 404; check releaseBaseUrl and that the release exists.`);
  const bytes = await readCapped(url, body, METADATA_MAX_BYTES);
  const sig = await open(`${url}.sig`, METADATA_TIMEOUT_MS);
  const signature = sig ? new TextDecoder().decode(await readCapped(`${url}.sig`, sig, SIGNATURE_MAX_BYTES)) : undefined;
  await assertSigned(url, bytes, signature);
  return bytes;
}

function parseJson(url: string, bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new BerthError("DOWNLOAD_FAILED", `${url} is not valid JSON; the release host may be misconfigured.`);
  }
}

/** Pure: the contents of a (verified) latest.json. */
export function parseLatest(url: string, value: unknown): Latest {
  const v = value as { version?: unknown; rolloutPercent?: unknown } | null;
  if (typeof v?.version !== "string" || !isVersion(v.version)) {
    throw new BerthError("DOWNLOAD_FAILED", `${url} does not name a version ({"version":"X.Y.Z"} expected).`);
  }
  if (v.rolloutPercent === undefined) return { version: v.version };
  if (typeof v.rolloutPercent !== "number" || !(v.rolloutPercent >= 0 && v.rolloutPercent <= 100)) {
    throw new BerthError("DOWNLOAD_FAILED", `${url} has a rolloutPercent that is not a number from 0 to 100.`);
  }
  return { version: v.version, rolloutPercent: v.rolloutPercent };
}

/**
 * latest.json, asked conditionally with the validators of the last verified
 * fetch: a 304 means "what you had is still current".
 */
export async function fetchLatest(baseUrl: string, cached?: LatestValidators): Promise<{ latest: Latest; notModified: boolean; validators?: LatestValidators }> {
  const url = joinUrl(baseUrl, "latest.json");
  const usable = cached?.url === url ? cached : undefined;
  const headers: Record<string, string> = {};
  if (usable?.etag) headers["if-none-match"] = usable.etag;
  if (usable?.lastModified) headers["if-modified-since"] = usable.lastModified;
  const opened = await open(url, METADATA_TIMEOUT_MS, headers);
  if (opened?.status === 304 && usable) {
    await opened.body.cancel();
    return { latest: usable.latest, notModified: true };
  }
  if (opened?.status === 304) throw new BerthError("DOWNLOAD_FAILED", `${url} answered 304 Not Modified to an unconditional request; the release host is misconfigured.`);
  const latest = parseLatest(url, parseJson(url, await readSigned(url, opened)));
  const etag = opened?.headers.get("etag") ?? undefined;
  const lastModified = opened?.headers.get("last-modified") ?? undefined;
  const validators = etag || lastModified ? { url, ...(etag ? { etag } : {}), ...(lastModified ? { lastModified } : {}), latest } : undefined;
  return { latest, notModified: false, ...(validators ? { validators } : {}) };
}

/** Pure: the asset of a (verified) manifest for a target, checked for shape. */
export function selectAsset(manifest: unknown, version: string, target: Target): Asset {
  const m = manifest as Partial<Manifest> | null;
  if (typeof m?.version !== "string" || !Array.isArray(m.assets)) {
    throw new BerthError("DOWNLOAD_FAILED", `the manifest of ${version} is malformed ({"version","assets"} expected).`);
  }
  if (m.version !== version) {
    // Correctly signed, but for another release: a replayed or misplaced manifest.
    throw new BerthError("SIGNATURE_INVALID", `the signed manifest at ${version}/manifest.json is for version ${m.version}, not ${version}; nothing was installed.`);
  }
  const asset = m.assets.find((a) => a?.target === target);
  if (!asset) throw new BerthError("DOWNLOAD_FAILED", `release ${version} has no build for ${target}.`);
  const hex = (value: unknown) => typeof value === "string" && /^[0-9a-f]{64}$/i.test(value);
  const size = (value: unknown) => Number.isSafeInteger(value) && (value as number) > 0;
  if (typeof asset.file !== "string" || !/^[A-Za-z0-9._-]+$/.test(asset.file) || !hex(asset.sha256) || !size(asset.size) || !hex(asset.binarySha256) || !size(asset.binarySize)) {
    throw new BerthError("DOWNLOAD_FAILED", `the manifest entry of ${version} for ${target} is malformed.`);
  }
  return asset;
}

export async function fetchManifestAsset(baseUrl: string, version: string, target: Target): Promise<Asset> {
  const url = joinUrl(baseUrl, `${version}/manifest.json`);
  const opened = await open(url, METADATA_TIMEOUT_MS);
  if (!opened) {
    const base = baseUrl.replace(/\/+$/, "");
    throw new BerthError("DOWNLOAD_FAILED", `${version} is not published at ${base} (no ${version}/manifest.json there); run \`berth update --check\` for the latest version.`);
  }
  return selectAsset(parseJson(url, await readSigned(url, opened)), version, target);
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.byteLength) offset += writeSync(fd, bytes, offset);
}

/**
 * Downloads the asset of `version` for `target` into `destination` (created,
 * never overwritten): the gzip stream is counted and hashed as it arrives and
 * cut off past the manifest's size; its decompressed bytes are hashed and
 * written as they come, and cut off past the binary's size.
 */
export async function downloadVerifiedAsset(baseUrl: string, version: string, target: Target, destination: string): Promise<Asset> {
  const asset = await fetchManifestAsset(baseUrl, version, target);
  const url = joinUrl(baseUrl, `${version}/${asset.file}`);
  const mismatch = (detail: string) => new BerthError("CHECKSUM_MISMATCH", `${url} does not match its manifest (${detail}); nothing was installed.`);
  const opened = await open(url, ASSET_TIMEOUT_MS);
  if (!opened) throw new BerthError("DOWNLOAD_FAILED", `could not download ${url}: HTTP 404; the release ${version} is incomplete on the host.`);
  if (opened.length !== undefined && opened.length > asset.size) {
    await opened.body.cancel();
    throw mismatch(`the host announces ${opened.length} bytes; the manifest says ${asset.size}`);
  }
  const compressedHash = new Bun.CryptoHasher("sha256");
  const binaryHash = new Bun.CryptoHasher("sha256");
  let compressed = 0;
  let binary = 0;
  let networkError: unknown;
  // The download, counted and hashed as it arrives; past the manifest's size it stops and is cancelled.
  const source = opened.body.getReader();
  const counted = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let next: Awaited<ReturnType<typeof source.read>>;
      try {
        next = await source.read();
      } catch (error) {
        networkError = error;
        throw error;
      }
      if (next.done) return controller.close();
      compressed += next.value.byteLength;
      if (compressed > asset.size) {
        await source.cancel().catch(() => {});
        throw mismatch(`more than the ${asset.size} bytes the manifest says`);
      }
      compressedHash.update(next.value);
      controller.enqueue(next.value);
    },
    cancel: (reason) => source.cancel(reason),
  });
  const fd = openSync(destination, "wx", 0o700);
  try {
    const reader = counted.pipeThrough(new DecompressionStream("gzip") as unknown as ReadableWritablePair<Uint8Array, Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        binary += value.byteLength;
        if (binary > asset.binarySize) throw mismatch(`it decompresses to more than the ${asset.binarySize} bytes the manifest says`);
        binaryHash.update(value);
        writeAll(fd, value);
      }
    } catch (error) {
      await reader.cancel().catch(() => {});
      await source.cancel().catch(() => {});
      if (isBerthError(error)) throw error;
      if (compressed > asset.size) throw mismatch(`more than the ${asset.size} bytes the manifest says`);
      if (networkError !== undefined) throw new BerthError("DOWNLOAD_FAILED", `could not download ${url}: ${describeError(networkError)}; nothing was installed.`);
      throw mismatch(`not a valid gzip stream: ${describeError(error)}`);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const sha256 = compressedHash.digest("hex");
  const binarySha256 = binaryHash.digest("hex");
  if (compressed !== asset.size || sha256 !== asset.sha256.toLowerCase()) {
    throw mismatch(`sha256 ${sha256}, ${compressed} bytes; expected ${asset.sha256}, ${asset.size} bytes`);
  }
  if (binary !== asset.binarySize || binarySha256 !== asset.binarySha256.toLowerCase()) {
    throw mismatch(`decompressed sha256 ${binarySha256}, ${binary} bytes; expected ${asset.binarySha256}, ${asset.binarySize} bytes`);
  }
  return asset;
}
