/** "Did you mean" for mistyped commands and flags: pure, tested as a table. */

/** Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`. */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i += 1) {
    rows.push([]);
    for (let j = 0; j <= b.length; j += 1) {
      if (i === 0 || j === 0) {
        rows[i]![j] = i + j;
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = best;
    }
  }
  return rows[a.length]![b.length]!;
}

/** The closest candidate within a third of its length (at least 1, at most 3 edits), or a prefix match. */
export function closestMatch(input: string, candidates: readonly string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of candidates) {
    const allowed = Math.min(3, Math.max(1, Math.floor(name.length / 3)));
    const distance = name.startsWith(input) && input.length >= 3 ? 0.5 : editDistance(input, name);
    if (distance <= allowed && (!best || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

/** The " Did you mean …?" sentence to append to a USAGE message, or "" when nothing is close. */
export function didYouMean(input: string, candidates: readonly string[]): string {
  const match = closestMatch(input, candidates);
  // What was typed itself is no suggestion (`run --name` with its value missing is a different mistake).
  return match === undefined || match === input ? "" : ` Did you mean ${JSON.stringify(match)}?`;
}
