/**
 * A byte ring indexed by absolute offsets: offset 0 is the first byte a
 * stream ever produced, `end` the next byte to come, `start` the oldest byte
 * still kept (`end - start <= capacity`). Pure: no I/O, tested as a table.
 */
export type RingRead = { offset: number; data: Uint8Array; truncated: boolean };

export class ByteRing {
  private readonly buffer: Uint8Array;
  private total = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity <= 0) throw new RangeError(`ring capacity must be a positive integer, got ${capacity}`);
    this.buffer = new Uint8Array(capacity);
  }

  /** Offset of the next byte to be written (bytes produced so far). */
  get end(): number {
    return this.total;
  }

  /** Offset of the oldest byte still kept. */
  get start(): number {
    return Math.max(0, this.total - this.capacity);
  }

  append(chunk: Uint8Array): void {
    let data = chunk;
    if (data.length > this.capacity) {
      this.total += data.length - this.capacity;
      data = data.subarray(data.length - this.capacity);
    }
    const at = this.total % this.capacity;
    const first = Math.min(data.length, this.capacity - at);
    this.buffer.set(data.subarray(0, first), at);
    if (first < data.length) this.buffer.set(data.subarray(first), 0);
    this.total += data.length;
  }

  /**
   * The kept bytes from `since` (default: start) up to `end`, at most
   * `maxBytes` of them. `since` before `start` is clamped and reported as
   * truncated; `since` past `end` reads nothing at `end`.
   */
  read(since = this.start, maxBytes = this.capacity): RingRead {
    const truncated = since < this.start;
    const from = Math.min(Math.max(since, this.start), this.total);
    const length = Math.max(0, Math.min(this.total - from, maxBytes));
    const data = new Uint8Array(length);
    const at = from % this.capacity;
    const first = Math.min(length, this.capacity - at);
    data.set(this.buffer.subarray(at, at + first), 0);
    if (first < length) data.set(this.buffer.subarray(0, length - first), first);
    return { offset: from, data, truncated };
  }

  /**
   * Like `read`, but without a copy where the bytes lie contiguously in the
   * ring: the data is a view that the next `append` may overwrite, so use it
   * at once (e.g. encode it) and keep nothing of it.
   */
  view(since = this.start, maxBytes = this.capacity): RingRead {
    const from = Math.min(Math.max(since, this.start), this.total);
    const length = Math.max(0, Math.min(this.total - from, maxBytes));
    const at = from % this.capacity;
    if (at + length > this.capacity) return this.read(since, maxBytes);
    return { offset: from, data: this.buffer.subarray(at, at + length), truncated: since < this.start };
  }
}
