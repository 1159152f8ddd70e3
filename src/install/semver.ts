/**
 * Version ordering for releases (SemVer 2.0.0 precedence). Pure; shared by
 * `install` (which releases to keep) and the updater (is latest newer?).
 */

export type Version = {
  major: number;
  minor: number;
  patch: number;
  prerelease: string[];
};

const VERSION_PATTERN = /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$/;

/** `1.4.0`, `v1.4.0`, `2.0.0-rc.1`, `1.0.0+build.5` (build metadata is ignored); undefined otherwise. */
export function parseVersion(text: string): Version | undefined {
  const match = VERSION_PATTERN.exec(text.trim());
  if (!match) return undefined;
  const [, major, minor, patch, pre] = match;
  return {
    major: Number(major),
    minor: Number(minor),
    patch: Number(patch),
    prerelease: pre ? pre.split(".") : [],
  };
}

export function isVersion(text: string): boolean {
  return parseVersion(text) !== undefined;
}

function compareIdentifiers(a: string, b: string): number {
  const aNumeric = /^\d+$/.test(a);
  const bNumeric = /^\d+$/.test(b);
  if (aNumeric && bNumeric) return Math.sign(Number(a) - Number(b));
  // Numeric identifiers sort before alphanumeric ones.
  if (aNumeric !== bNumeric) return aNumeric ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * -1, 0 or 1 by SemVer precedence: `1.0.0-rc.1 < 1.0.0 < 1.0.1 < 1.10.0`.
 * Text that is not a version sorts before every version (and by plain string
 * order among itself), so a stray name never outranks a real release.
 */
export function compareVersions(a: string, b: string): number {
  const va = parseVersion(a);
  const vb = parseVersion(b);
  if (!va || !vb) {
    if (va) return 1;
    if (vb) return -1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  for (const key of ["major", "minor", "patch"] as const) {
    if (va[key] !== vb[key]) return Math.sign(va[key] - vb[key]);
  }
  const pa = va.prerelease;
  const pb = vb.prerelease;
  // A release outranks its prereleases.
  if (pa.length === 0 || pb.length === 0) return pa.length === pb.length ? 0 : pa.length === 0 ? 1 : -1;
  for (let i = 0; i < Math.min(pa.length, pb.length); i += 1) {
    const order = compareIdentifiers(pa[i] as string, pb[i] as string);
    if (order !== 0) return order;
  }
  return Math.sign(pa.length - pb.length);
}

export function isNewerVersion(candidate: string, than: string): boolean {
  return compareVersions(candidate, than) > 0;
}
