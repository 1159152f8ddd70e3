/** Reads a byte stream as `\n`-terminated UTF-8 lines (what `berth connect` writes), calling `onLine` for each whole line. */
export async function readLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  // A long line arrives in many chunks: keep them apart and look for "\n" only in the new one (no quadratic re-scan).
  let parts: string[] = [];
  for await (const chunk of stream) {
    const text = decoder.decode(chunk, { stream: true });
    let from = 0;
    for (let at = text.indexOf("\n"); at >= 0; at = text.indexOf("\n", from)) {
      parts.push(text.slice(from, at));
      onLine(parts.length === 1 ? (parts[0] as string) : parts.join(""));
      parts = [];
      from = at + 1;
    }
    if (from < text.length) parts.push(text.slice(from));
  }
}
