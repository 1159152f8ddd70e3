/** Reads a byte stream as `\n`-terminated UTF-8 lines (what `berth connect` writes), calling `onLine` for each whole line. */
export async function readLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let partial = "";
  for await (const chunk of stream) {
    partial += decoder.decode(chunk, { stream: true });
    const lines = partial.split("\n");
    partial = lines.pop() as string;
    for (const line of lines) onLine(line);
  }
}
