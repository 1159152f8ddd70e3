/**
 * Reading a release host: latest.json, <version>/manifest.json and the asset,
 * over http(s) or file://, each with a deadline, verified before use.
 */
import { createHash } from "node:crypto";
import { closeSync, fsyncSync, openSync, writeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { BerthError, describeError } from "../errors.ts";
import { isVersion } from "../install/semver.ts";
import type { Target } from "../platform/paths.ts";

/** A metadata fetch (latest.json, manifest) may take this long. */
export const METADATA_TIMEOUT_MS = 30_000;
/** An asset download may take this long (100+ MB on a slow link). */
export const ASSET_TIMEOUT_MS = 15 * 60_000;

export type Asset = { target: string; file: string; sha256: string; size: number };
export type Manifest = { version: string; assets: Asset[] };

function join(base: string, path: string): string {
  return `${base.replace(/\/+$/, "")}/${path}`;
}

async function fetchBytes(url: string, timeoutMs: number): Promise<Uint8Array> {
  try {
    if (url.startsWith("file://")) return new Uint8Array(await Bun.file(fileURLToPath(url)).arrayBuffer());
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: "follow" });
    if (!response.ok) throw Object.assign(new Error(`HTTP ${response.status}`), { status: response.status });
    return new Uint8Array(await response.arrayBuffer());
  } catch (error) {
    throw new BerthError("DOWNLOAD_FAILED", `could not download ${url}: ${describeError(error)}`, { cause: error });
  }
}

async function fetchJson(url: string): Promise<unknown> {
  const bytes = await fetchBytes(url, METADATA_TIMEOUT_MS);
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new BerthError("DOWNLOAD_FAILED", `${url} is not valid JSON; the release host may be misconfigured.`);
  }
}

export async function fetchLatestVersion(baseUrl: string): Promise<string> {
  const url = join(baseUrl, "latest.json");
  const value = (await fetchJson(url)) as { version?: unknown } | null;
  if (typeof value?.version !== "string" || !isVersion(value.version)) {
    throw new BerthError("DOWNLOAD_FAILED", `${url} does not name a version ({"version":"X.Y.Z"} expected).`);
  }
  return value.version;
}

/** Pure: the asset of a manifest for a target, checked for shape. */
export function selectAsset(manifest: unknown, version: string, target: Target): Asset {
  const m = manifest as Partial<Manifest> | null;
  if (m?.version !== version || !Array.isArray(m.assets)) {
    throw new BerthError("DOWNLOAD_FAILED", `the manifest of ${version} is malformed or names another version.`);
  }
  const asset = m.assets.find((a) => a?.target === target);
  if (!asset) throw new BerthError("DOWNLOAD_FAILED", `release ${version} has no build for ${target}.`);
  if (
    typeof asset.file !== "string" ||
    !/^[A-Za-z0-9._-]+$/.test(asset.file) ||
    typeof asset.sha256 !== "string" ||
    !/^[0-9a-f]{64}$/i.test(asset.sha256) ||
    !Number.isInteger(asset.size)
  ) {
    throw new BerthError("DOWNLOAD_FAILED", `the manifest entry of ${version} for ${target} is malformed.`);
  }
  return asset;
}

/** Pure: did a download fail because the file is not there (HTTP 404/410, no such file)? */
export function isNotFound(error: unknown): boolean {
  const cause = (error as { cause?: { status?: unknown; code?: unknown } } | null)?.cause;
  return cause?.status === 404 || cause?.status === 410 || cause?.code === "ENOENT";
}

/** The manifest of `version`; a version the host does not have is named as such. */
async function fetchManifest(baseUrl: string, version: string): Promise<unknown> {
  try {
    return await fetchJson(join(baseUrl, `${version}/manifest.json`));
  } catch (error) {
    if (!isNotFound(error)) throw error;
    const base = baseUrl.replace(/\/+$/, "");
    throw new BerthError("DOWNLOAD_FAILED", `${version} is not published at ${base} (no ${version}/manifest.json there); run \`berth update --check\` for the latest version.`, { cause: error });
  }
}

/** Downloads the asset of `version` for `target` to `destination` and verifies size and SHA-256. */
export async function downloadVerifiedAsset(baseUrl: string, version: string, target: Target, destination: string): Promise<Asset> {
  const asset = selectAsset(await fetchManifest(baseUrl, version), version, target);
  const url = join(baseUrl, `${version}/${asset.file}`);
  const bytes = await fetchBytes(url, ASSET_TIMEOUT_MS);
  const actual = createHash("sha256").update(bytes).digest("hex");
  if (bytes.byteLength !== asset.size || actual !== asset.sha256.toLowerCase()) {
    throw new BerthError(
      "CHECKSUM_MISMATCH",
      `${url} does not match its manifest (sha256 ${actual}, ${bytes.byteLength} bytes; expected ${asset.sha256}, ${asset.size} bytes); nothing was installed.`,
    );
  }
  const fd = openSync(destination, "wx", 0o755);
  try {
    let offset = 0;
    while (offset < bytes.byteLength) offset += writeSync(fd, bytes, offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return asset;
}
