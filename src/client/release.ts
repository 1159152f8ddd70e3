/**
 * The release as the client sees it: the latest version at the base URL, and
 * a local, verified copy of the binary for a host's target, for hosts that
 * cannot download it themselves. A `file://` base is a release folder on this
 * machine (what `bun run build.ts --release` writes); an http(s) base is
 * downloaded once into `${XDG_CACHE_HOME:-~/.cache}/berth/releases/<version>/`.
 * The version's manifest.json must carry a signature this berth trusts (the
 * same check as `update`); assets are checked against it (sha256 of the file,
 * binarySha256 once unpacked); nothing is held whole in memory.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { BerthError, describeError } from "../errors.ts";
import { isVersion } from "../install/semver.ts";
import { homeFrom, type Target } from "../platform/paths.ts";
import { assertSigned } from "../update/signature.ts";
import { BUILT_IN_BASE_URL } from "../version.ts";

/** A small release document (latest.json, manifest.json) must arrive within this. */
const METADATA_TIMEOUT_MS = 20_000;
/** A binary download (about 100 MB) must finish within this. */
const ASSET_TIMEOUT_MS = 600_000;
const METADATA_MAX_BYTES = 1 << 20;

export type Asset = { target: string; file: string; sha256: string; size?: number; binarySha256?: string };

/** The base URL releases come from: BERTH_RELEASE_BASE_URL, else the one built into this berth; no trailing slash. */
export function releaseBaseUrl(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.BERTH_RELEASE_BASE_URL?.trim() || BUILT_IN_BASE_URL;
  if (!base) {
    throw new BerthError("USAGE", "no release base URL: this berth was built without one; set BERTH_RELEASE_BASE_URL to where berth releases are served (http(s):// or file:// of a folder from `bun run build.ts --release`).");
  }
  return base.replace(/\/+$/, "");
}

export function isFileUrl(base: string): boolean {
  return base.startsWith("file://");
}

async function fetchText(url: string): Promise<string> {
  if (isFileUrl(url)) {
    const file = Bun.file(new URL(url).pathname);
    if ((await file.exists()) && file.size <= METADATA_MAX_BYTES) return file.text();
    throw new Error(`${url} is missing or too large`);
  }
  const response = await fetch(url, { signal: AbortSignal.timeout(METADATA_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
  const text = await response.text();
  if (text.length > METADATA_MAX_BYTES) throw new Error(`${url} is larger than ${METADATA_MAX_BYTES} bytes`);
  return text;
}

/** The version latest.json names, or undefined when the release cannot be reached from here. */
export async function latestVersion(base: string): Promise<string | undefined> {
  try {
    const version = (JSON.parse(await fetchText(`${base}/latest.json`)) as { version?: unknown }).version;
    return typeof version === "string" && isVersion(version) ? version : undefined;
  } catch {
    return undefined;
  }
}

/** Pure: the asset for a target in a manifest (or SHA256SUMS-only releases: `berth-<target>`). */
export function assetFor(manifest: unknown, target: Target): Asset | undefined {
  const assets = (manifest as { assets?: unknown } | null)?.assets;
  if (!Array.isArray(assets)) return undefined;
  const asset = assets.find((a) => (a as Asset | null)?.target === target) as Asset | undefined;
  if (!asset || typeof asset.file !== "string" || !/^[\w.-]+$/.test(asset.file) || typeof asset.sha256 !== "string") return undefined;
  return asset;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

function cacheRoot(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CACHE_HOME || join(homeFrom(env), ".cache"), "berth", "releases");
}

/** Streams a URL (http(s) or file://) to `dest`. */
async function download(url: string, dest: string): Promise<void> {
  if (isFileUrl(url)) {
    await pipeline(createReadStream(new URL(url).pathname), createWriteStream(dest, { mode: 0o600 }));
    return;
  }
  const response = await fetch(url, { signal: AbortSignal.timeout(ASSET_TIMEOUT_MS) });
  if (!response.ok || !response.body) throw new Error(`${url} answered HTTP ${response.status}`);
  await pipeline(Readable.fromWeb(response.body as any), createWriteStream(dest, { mode: 0o600 }));
}

/**
 * A local, verified berth binary of `version` for `target`: straight from a
 * file:// release folder when it is not gzipped, else from the cache (filled
 * once from the base URL).
 */
export async function localBinary(base: string, version: string, target: Target, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const where = `${base}/${version}/manifest.json`;
  let manifestText: string;
  try {
    manifestText = await fetchText(where);
  } catch (error) {
    throw new BerthError("DOWNLOAD_FAILED", `cannot read ${where} from this machine (${describeError(error)}), so berth cannot be uploaded to a host that cannot download it.`);
  }
  await assertSigned(where, new TextEncoder().encode(manifestText), await fetchText(`${where}.sig`).catch(() => undefined));
  let asset: Asset | undefined;
  try {
    asset = assetFor(JSON.parse(manifestText), target);
  } catch (error) {
    throw new BerthError("DOWNLOAD_FAILED", `${where} is not JSON (${describeError(error)}).`);
  }
  if (!asset) throw new BerthError("DOWNLOAD_FAILED", `${where} has no asset for ${target}; nothing to upload.`);
  const gzipped = asset.file.endsWith(".gz");
  if (isFileUrl(base) && !gzipped) {
    const path = join(new URL(base).pathname, version, asset.file);
    if ((await sha256File(path).catch(() => "")) !== asset.sha256) {
      throw new BerthError("CHECKSUM_MISMATCH", `${path} does not match the sha256 in ${where}; rebuild the release.`);
    }
    return path;
  }
  const dir = join(cacheRoot(env), version);
  const binary = join(dir, `berth-${target}`);
  const wanted = asset.binarySha256 ?? (gzipped ? undefined : asset.sha256);
  if (existsSync(binary) && wanted && (await sha256File(binary)) === wanted) return binary;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const partial = `${binary}.${process.pid}.part`;
  const packed = `${partial}.download`;
  try {
    try {
      await download(`${base}/${version}/${asset.file}`, packed);
    } catch (error) {
      throw new BerthError("DOWNLOAD_FAILED", `cannot download ${base}/${version}/${asset.file}: ${describeError(error)}`);
    }
    if ((await sha256File(packed)) !== asset.sha256) {
      throw new BerthError("CHECKSUM_MISMATCH", `${base}/${version}/${asset.file} does not match the sha256 of ${where}; nothing was uploaded.`);
    }
    if (gzipped) {
      await pipeline(createReadStream(packed), createGunzip(), createWriteStream(partial, { mode: 0o700 }));
      if (asset.binarySha256 && (await sha256File(partial)) !== asset.binarySha256) {
        throw new BerthError("CHECKSUM_MISMATCH", `the unpacked ${asset.file} does not match binarySha256 of ${where}; nothing was uploaded.`);
      }
    } else renameSync(packed, partial);
    renameSync(partial, binary);
    return binary;
  } finally {
    rmSync(packed, { force: true });
    rmSync(partial, { force: true });
  }
}
