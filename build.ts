#!/usr/bin/env bun
/**
 * Builds berth.
 *   bun run build.ts                      dist/berth for this machine
 *   bun run build.ts --release            dist/release/: every target + the files a static host serves
 *   bun run build.ts --release --host     the same, for this machine's target only (fast; tests use it)
 *   --rollout-percent N                   latest.json asks for a phased rollout to N % of machines
 * Options: --outdir DIR, --base-url URL (baked into install.sh and the binaries), env BERTH_BUILD_VERSION (version override).
 * Signing: BERTH_SIGNING_KEY = PKCS#8 PEM Ed25519 private key (else a development key in dist/, with a
 * warning); BERTH_TRUSTED_KEYS = `:`-separated PEM public keys trusted besides the signing key's own.
 */
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import packageJson from "./package.json" with { type: "json" };
import { TARGETS, type Target } from "./src/platform/paths.ts";
import { signBytes, signingKey, trustedKeysFor, type SigningKey } from "./src/update/keys.ts";
import { CLI_TARGET } from "./src/version.ts";

const ROOT = import.meta.dir;
const ENTRY = join(ROOT, "src", "main.ts");
const DIST = join(ROOT, "dist");
const BASE_URL_PLACEHOLDER = "__BERTH_RELEASE_BASE_URL__";
const PUBLIC_KEYS_PLACEHOLDER = "__BERTH_PUBLIC_KEYS__";

/** Bun's compile target for each release target (x64 uses the baseline build: no AVX2 needed). */
const BUN_TARGETS: Record<Target, Bun.Build.CompileTarget> = {
  "linux-x64": "bun-linux-x64-baseline",
  "linux-arm64": "bun-linux-arm64",
  "linux-x64-musl": "bun-linux-x64-baseline-musl",
  "linux-arm64-musl": "bun-linux-arm64-musl",
  "darwin-x64": "bun-darwin-x64",
  "darwin-arm64": "bun-darwin-arm64",
};

/**
 * `trustedKeys`: base64 SPKI Ed25519 keys compiled in; default: what this build's environment trusts.
 * `bytecodeOrder: false` builds without the recorded profiles (bench/record-order.ts records with such a build).
 */
export type BuildOptions = { version: string; target?: Target; outfile: string; trustedKeys?: readonly string[]; baseUrl?: string; bytecodeOrder?: false };

/**
 * Where the commands clients run most spend their bytecode (recorded by bench/record-order.ts), most used first:
 * `bun build --bytecode-order` lays that bytecode out together at the front of the executable, so a command
 * reads and decodes less of it. Only the layout changes; a profile older than the code still applies.
 */
export const ORDER_DIR = join(ROOT, "bench", "order");
export const ORDER_FILES = ["version", "status", "connect", "start", "serve", "stop"] as const;

/** JavaScriptCore's tier-up thresholds are scaled by this in a compiled berth until workingForLong() (src/platform/jit.ts). */
const JIT_POLICY = 8;

function orderProfiles(): string[] | false {
  const files = ORDER_FILES.map((name) => join(ORDER_DIR, `${name}.order`)).filter((file) => existsSync(file));
  return files.length > 0 && files;
}

/** The signing key of this build (created in dist/ when none is configured) and the keys it trusts. */
export function buildKeys(env: Record<string, string | undefined> = process.env): { signing: SigningKey; trusted: string[] } {
  const signing = signingKey(env, DIST, true) as SigningKey;
  return { signing, trusted: trustedKeysFor(env, signing) };
}

/**
 * Targets whose bytecode build has been run and tested (binary, lifecycle suites) on such a machine.
 * JSC bytecode is produced by the building machine's engine; Bun accepts it for other targets, but a
 * binary that may not run is not worth a few milliseconds: add a target here once it has been run there.
 * The build for this very machine (no `target`) always gets it.
 */
const BYTECODE_VERIFIED_TARGETS: ReadonlySet<Target> = new Set(["linux-x64"]);

/** One compiled executable. No `target` means "this machine, with the bun running this script". */
export async function compile({ version, target, outfile, trustedKeys, baseUrl, bytecodeOrder }: BuildOptions): Promise<void> {
  const keys = trustedKeys ?? buildKeys().trusted;
  const bytecode = target === undefined || BYTECODE_VERIFIED_TARGETS.has(target);
  const result = await Bun.build({
    entrypoints: [ENTRY],
    minify: true,
    // Each dynamic import becomes its own chunk inside the executable, so a command loads (and pays the
    // start-up cost of the builtins it imports, e.g. node:util ≈ 0.5× the floor) only what its path needs.
    splitting: true,
    // Ahead-of-time JSC bytecode for our chunks and the node: builtins they load, so nothing is parsed at
    // start-up (`version` 11.3 → 6.8 ms, floor 2.7 ms). Needs ESM output, which the compile embeds with its
    // import metadata.
    bytecode,
    format: "esm",
    sourcemap: "none",
    define: {
      BERTH_COMPILED_VERSION: JSON.stringify(version),
      BERTH_COMPILED_TARGET: JSON.stringify(target ?? CLI_TARGET ?? ""),
      BERTH_COMPILED_TRUSTED_KEYS: JSON.stringify(keys.join(",")),
      BERTH_COMPILED_BASE_URL: JSON.stringify((baseUrl ?? "").replace(/\/+$/, "")),
    },
    compile: {
      ...(target ? { target: BUN_TARGETS[target] } : {}),
      outfile,
      // A daemon must not change behaviour with whatever folder it was started from.
      autoloadBunfig: false,
      autoloadDotenv: false,
      autoloadTsconfig: false,
      autoloadPackageJson: false,
      // Bun 1.4 refuses to start a compiled program from a deleted working folder (`berth --version` exits 1
      // with no JSON) unless the program has an exec argv; any harmless flag will do (see test/hostile-env.test.ts).
      execArgv: ["--no-deprecation"],
      bytecodeOrder: bytecode && bytecodeOrder !== false && orderProfiles(),
      // Start-up code stays in the interpreter longer (src/platform/jit.ts: long-running processes reset it).
      jitPolicy: JIT_POLICY,
    },
  });
  if (!result.success) {
    for (const log of result.logs) console.error(log);
    throw new Error(`build of ${outfile} failed`);
  }
  chmodSync(outfile, 0o755);
}

export function buildVersion(): string {
  return process.env.BERTH_BUILD_VERSION || packageJson.version;
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

export type ReleaseAsset = { target: Target; file: string; sha256: string; size: number; binarySha256: string; binarySize: number };

/** The manifest text: one asset per line, so install.sh can pick its line with sed. */
export function manifestText(version: string, assets: readonly ReleaseAsset[]): string {
  return `{"version":${JSON.stringify(version)},"assets":[\n${assets.map((a) => JSON.stringify(a)).join(",\n")}\n]}\n`;
}

/** Writes `path` and `path.sig` (base64 of the raw Ed25519 signature over exactly those bytes). */
export async function writeSigned(path: string, text: string, privatePem: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  writeFileSync(path, bytes);
  writeFileSync(`${path}.sig`, `${await signBytes(privatePem, bytes)}\n`);
}

/**
 * dist/release/: install.sh, latest.json(.sig), <version>/{manifest.json(.sig), SHA256SUMS, berth-<target>.gz}.
 * `rolloutPercent` goes into latest.json for a phased rollout.
 */
export async function buildRelease(options: { version: string; targets: readonly Target[]; outdir: string; baseUrl?: string; rolloutPercent?: number }) {
  const { version, targets, outdir } = options;
  const { signing, trusted } = buildKeys();
  if (signing.dev) console.error(`warning: signing with the development key ${signing.path}: this release is for testing only; set BERTH_SIGNING_KEY to sign a real one.`);
  const versionDir = join(outdir, version);
  rmSync(versionDir, { recursive: true, force: true });
  mkdirSync(versionDir, { recursive: true });
  const assets: ReleaseAsset[] = [];
  for (const target of targets) {
    const file = `berth-${target}.gz`;
    const binaryPath = join(versionDir, `berth-${target}`);
    const started = performance.now();
    // This machine's target is built with the running bun (no download); others are cross-compiled.
    await compile({ version, target: target === CLI_TARGET ? undefined : target, outfile: binaryPath, trustedKeys: trusted, baseUrl: options.baseUrl });
    const binary = readFileSync(binaryPath);
    const gz = Bun.gzipSync(binary, { level: 9 });
    writeFileSync(join(versionDir, file), gz);
    rmSync(binaryPath);
    const asset = { target, file, sha256: sha256(gz), size: gz.byteLength, binarySha256: sha256(binary), binarySize: binary.byteLength };
    assets.push(asset);
    console.error(`built ${file} (${(asset.binarySize / 1e6).toFixed(1)} MB, ${(asset.size / 1e6).toFixed(1)} MB gzipped) in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  await writeSigned(join(versionDir, "manifest.json"), manifestText(version, assets), signing.pem);
  writeFileSync(join(versionDir, "SHA256SUMS"), assets.map((a) => `${a.sha256}  ${a.file}\n`).join(""));
  const latest = options.rolloutPercent === undefined ? { version } : { version, rolloutPercent: options.rolloutPercent };
  await writeSigned(join(outdir, "latest.json"), `${JSON.stringify(latest)}\n`, signing.pem);
  let installer = readFileSync(join(ROOT, "install.sh"), "utf8").replace(PUBLIC_KEYS_PLACEHOLDER, trusted.join(" "));
  if (options.baseUrl) installer = installer.replace(BASE_URL_PLACEHOLDER, options.baseUrl.replace(/\/+$/, ""));
  writeFileSync(join(outdir, "install.sh"), installer, { mode: 0o755 });
  return { version, assets, outdir };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Bun.argv.slice(2),
    options: {
      release: { type: "boolean", default: false },
      host: { type: "boolean", default: false },
      outdir: { type: "string" },
      "base-url": { type: "string" },
      "rollout-percent": { type: "string" },
    },
  });
  const version = buildVersion();
  const started = performance.now();
  if (values.release) {
    if (values.host && !CLI_TARGET) throw new Error("this machine is not a release target");
    const targets = values.host ? [CLI_TARGET as Target] : TARGETS;
    const outdir = resolve(values.outdir ?? join(ROOT, "dist", "release"));
    const rollout = values["rollout-percent"];
    if (rollout !== undefined && !/^(100|[1-9]?[0-9])$/.test(rollout)) throw new Error(`--rollout-percent ${rollout} is not a whole number from 0 to 100`);
    await buildRelease({
      version,
      targets,
      outdir,
      baseUrl: values["base-url"] ?? process.env.BERTH_RELEASE_BASE_URL,
      ...(rollout === undefined ? {} : { rolloutPercent: Number(rollout) }),
    });
    console.error(`release ${version} for ${targets.join(", ")} in ${outdir} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  } else {
    const outfile = join(resolve(values.outdir ?? join(ROOT, "dist")), "berth");
    await compile({ version, outfile, baseUrl: values["base-url"] ?? process.env.BERTH_RELEASE_BASE_URL });
    console.error(`built ${outfile} ${version} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  }
}
