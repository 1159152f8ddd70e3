/**
 * node:path's POSIX functions that berth's hot paths use. berth runs on Linux and macOS only, where
 * node:path is exactly this; but as the first built-in module a compiled berth loads, node:path costs
 * 0.2–0.6 ms (measured; a tenth of Bun's floor or more), for a few string functions.
 * test/posix-path.test.ts checks each against node:path on a table of awkward inputs.
 */

export const sep = "/";

export function isAbsolute(path: string): boolean {
  return path.startsWith("/");
}

/** Pure: `.` and `..` resolved, repeated slashes folded; a trailing slash kept, as node:path keeps it. */
export function normalize(path: string): string {
  if (path === "") return ".";
  const absolute = isAbsolute(path);
  const trailing = path.endsWith("/");
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (parts.length > 0 && parts[parts.length - 1] !== "..") parts.pop();
      else if (!absolute) parts.push("..");
    } else parts.push(part);
  }
  let result = parts.join("/");
  if (result === "") return absolute ? "/" : trailing ? "./" : ".";
  if (trailing) result += "/";
  return absolute ? `/${result}` : result;
}

/** Pure: true when normalize() would return `path` unchanged (no `.`/`..` names, no doubled or trailing slash). */
function isNormal(path: string): boolean {
  return !(
    path === "" ||
    path === "." ||
    path === ".." ||
    path.startsWith("./") ||
    path.startsWith("../") ||
    path.includes("//") ||
    path.includes("/./") ||
    path.includes("/../") ||
    path.endsWith("/.") ||
    path.endsWith("/..") ||
    (path.length > 1 && path.endsWith("/"))
  );
}

export function join(...parts: string[]): string {
  let joined = "";
  for (const part of parts) if (part !== "") joined = joined === "" ? part : `${joined}/${part}`;
  // The common case (clean names under a clean folder) in a few native string calls: cold code is slow.
  return joined === "" ? "." : isNormal(joined) ? joined : normalize(joined);
}

/** An absolute path without a trailing slash: the parts from the last absolute one, after the working folder. */
export function resolve(...parts: string[]): string {
  let path = "";
  for (let i = parts.length - 1; i >= 0 && !isAbsolute(path); i -= 1) {
    const part = parts[i] as string;
    if (part !== "") path = path === "" ? part : `${part}/${path}`;
  }
  if (!isAbsolute(path)) path = path === "" ? process.cwd() : `${process.cwd()}/${path}`;
  const normal = normalize(path);
  return normal.length > 1 && normal.endsWith("/") ? normal.slice(0, -1) : normal;
}

/** Pure: trailing slashes dropped (but "/" stays "/"). */
function trimTrailing(path: string): string {
  let end = path.length;
  while (end > 1 && path[end - 1] === "/") end -= 1;
  return path.slice(0, end);
}

/** Everything before the last name: trailing slashes skipped, then up to (not with) the slash before that name. */
export function dirname(path: string): string {
  if (path === "") return ".";
  const rooted = isAbsolute(path);
  let sawName = false;
  for (let i = path.length - 1; i >= 1; i -= 1) {
    if (path[i] !== "/") sawName = true;
    else if (sawName) return rooted && i === 1 ? "//" : path.slice(0, i);
  }
  return rooted ? "/" : ".";
}

export function basename(path: string): string {
  const trimmed = trimTrailing(path);
  return trimmed === "/" ? "" : trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/** The path from `from` to `to` (both resolved first); "" when they are the same. */
export function relative(from: string, to: string): string {
  const a = resolve(from).split("/").filter(Boolean);
  const b = resolve(to).split("/").filter(Boolean);
  let common = 0;
  while (common < a.length && common < b.length && a[common] === b[common]) common += 1;
  return [...Array<string>(a.length - common).fill(".."), ...b.slice(common)].join("/");
}
