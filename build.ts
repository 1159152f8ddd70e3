#!/usr/bin/env bun
/**
 * Builds berth.
 *   bun run build.ts                      dist/berth for this machine
 *   bun run build.ts --release            dist/release/: every target + the files a static host serves
 *   bun run build.ts --release --host     the same, for this machine's target only (fast; tests use it)
 * Options: --outdir DIR, --base-url URL (baked into install.sh), env BERTH_BUILD_VERSION (version override).
 */
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import packageJson from "./package.json" with { type: "json" };
import { TARGETS, type Target } from "./src/platform/paths.ts";
import { CLI_TARGET } from "./src/version.ts";

const ROOT = import.meta.dir;
const ENTRY = join(ROOT, "src", "main.ts");
const BASE_URL_PLACEHOLDER = "__BERTH_RELEASE_BASE_URL__";

/** Bun's compile target for each release target (x64 uses the baseline build: no AVX2 needed). */
const BUN_TARGETS: Record<Target, Bun.Build.CompileTarget> = {
  "linux-x64": "bun-linux-x64-baseline",
  "linux-arm64": "bun-linux-arm64",
  "linux-x64-musl": "bun-linux-x64-baseline-musl",
  "linux-arm64-musl": "bun-linux-arm64-musl",
  "darwin-x64": "bun-darwin-x64",
  "darwin-arm64": "bun-darwin-arm64",
};

export type BuildOptions = { version: string; target?: Target; outfile: string };

/** One compiled executable. No `target` means "this machine, with the bun running this script". */
export async function compile({ version, target, outfile }: BuildOptions): Promise<void> {
  const result = await Bun.build({
    entrypoints: [ENTRY],
    minify: true,
    // Each dynamic import becomes its own chunk inside the executable, so a command loads (and pays the
    // start-up cost of the builtins it imports, e.g. node:util ≈ 0.5× the floor) only what its path needs.
    splitting: true,
    sourcemap: "none",
    define: {
      BERTH_COMPILED_VERSION: JSON.stringify(version),
      BERTH_COMPILED_TARGET: JSON.stringify(target ?? CLI_TARGET ?? ""),
    },
    compile: {
      ...(target ? { target: BUN_TARGETS[target] } : {}),
      outfile,
      // A daemon must not change behaviour with whatever folder it was started from.
      autoloadBunfig: false,
      autoloadDotenv: false,
      autoloadTsconfig: false,
      autoloadPackageJson: false,
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

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** dist/release/: install.sh, latest.json, <version>/{manifest.json,SHA256SUMS,berth-<target>}. */
export async function buildRelease(options: { version: string; targets: readonly Target[]; outdir: string; baseUrl?: string }) {
  const { version, targets, outdir } = options;
  const versionDir = join(outdir, version);
  rmSync(versionDir, { recursive: true, force: true });
  mkdirSync(versionDir, { recursive: true });
  const assets = [];
  for (const target of targets) {
    const file = `berth-${target}`;
    const path = join(versionDir, file);
    const started = performance.now();
    // This machine's target is built with the running bun (no download); others are cross-compiled.
    await compile({ version, target: target === CLI_TARGET ? undefined : target, outfile: path });
    const asset = { target, file, sha256: sha256(path), size: statSync(path).size };
    assets.push(asset);
    console.error(`built ${file} (${(asset.size / 1e6).toFixed(1)} MB) in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  writeFileSync(join(versionDir, "manifest.json"), `${JSON.stringify({ version, assets }, null, 2)}\n`);
  writeFileSync(join(versionDir, "SHA256SUMS"), assets.map((a) => `${a.sha256}  ${a.file}\n`).join(""));
  writeFileSync(join(outdir, "latest.json"), `${JSON.stringify({ version })}\n`);
  const installer = readFileSync(join(ROOT, "install.sh"), "utf8");
  const baked = options.baseUrl ? installer.replace(BASE_URL_PLACEHOLDER, options.baseUrl.replace(/\/+$/, "")) : installer;
  writeFileSync(join(outdir, "install.sh"), baked, { mode: 0o755 });
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
    },
  });
  const version = buildVersion();
  const started = performance.now();
  if (values.release) {
    if (values.host && !CLI_TARGET) throw new Error("this machine is not a release target");
    const targets = values.host ? [CLI_TARGET as Target] : TARGETS;
    const outdir = resolve(values.outdir ?? join(ROOT, "dist", "release"));
    await buildRelease({ version, targets, outdir, baseUrl: values["base-url"] ?? process.env.BERTH_RELEASE_BASE_URL });
    console.error(`release ${version} for ${targets.join(", ")} in ${outdir} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  } else {
    const outfile = join(resolve(values.outdir ?? join(ROOT, "dist")), "berth");
    await compile({ version, outfile });
    console.error(`built ${outfile} ${version} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  }
}
