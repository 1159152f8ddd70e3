import packageJson from "../package.json" with { type: "json" };
import { isTarget, type Target } from "./platform/paths.ts";
import { existsSync } from "node:fs";

// Replaced by build.ts (`define`) in compiled binaries; undeclared when running from source.
declare const BERTH_COMPILED_VERSION: string | undefined;
declare const BERTH_COMPILED_TARGET: string | undefined;
declare const BERTH_COMPILED_BASE_URL: string | undefined;

/** The version of this executable. From source, BERTH_BUILD_VERSION stands in for a build (tests use it). */
export const CLI_VERSION: string =
  typeof BERTH_COMPILED_VERSION === "string"
    ? BERTH_COMPILED_VERSION
    : process.env.BERTH_BUILD_VERSION || packageJson.version;

export const IS_COMPILED = typeof BERTH_COMPILED_VERSION === "string";

function detectTarget(): Target | undefined {
  const os = process.platform === "linux" || process.platform === "darwin" ? process.platform : undefined;
  const arch = process.arch === "x64" || process.arch === "arm64" ? process.arch : undefined;
  if (!os || !arch) return undefined;
  if (os === "linux") {
    const muslLoader = `/lib/ld-musl-${arch === "x64" ? "x86_64" : "aarch64"}.so.1`;
    if (existsSync(muslLoader) && !existsSync("/lib64/ld-linux-x86-64.so.2") && !existsSync("/lib/ld-linux-aarch64.so.1")) {
      return `linux-${arch}-musl`;
    }
  }
  return `${os}-${arch}`;
}

/** The release target this executable was built for (compiled) or would be built for (source). */
export const CLI_TARGET: Target | undefined =
  typeof BERTH_COMPILED_TARGET === "string" && isTarget(BERTH_COMPILED_TARGET) ? BERTH_COMPILED_TARGET : detectTarget();

/**
 * Where this executable's releases come from (`build.ts --base-url`), so a
 * binary downloaded by hand and run as `berth install` can update itself.
 * Empty when built without one, and when running from source.
 */
export const BUILT_IN_BASE_URL: string = typeof BERTH_COMPILED_BASE_URL === "string" ? BERTH_COMPILED_BASE_URL.replace(/\/+$/, "") : "";
