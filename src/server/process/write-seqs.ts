/**
 * Exactly-once process/write across reconnects (as mosh and Eternal Terminal
 * number their input): a client names itself with a random `writer` id and
 * numbers each distinct chunk with an increasing `seq`. A connection that
 * dropped after the app-server applied a write, before its answer got back,
 * makes the client send the same chunk again with the same seq on the next
 * connection; the app-server remembers, per process, the highest seq applied
 * per writer and answers such a repeat as done without writing it again.
 *
 * A write is applied whole or not at all (managed.ts checks the bound on
 * unread input before it queues any byte, and queues all of them), so a
 * refused write (-32001) records nothing and its retry with the same seq is
 * applied. A gap (N+2 after N) is accepted: seqs only have to increase.
 */

/** Writers remembered per process; a new one past this evicts the one that wrote least recently. */
export const MAX_WRITERS_PER_PROCESS = 8;
/** The longest writer id taken (a client's random id: 16-32 characters). */
export const MAX_WRITER_ID_CHARS = 64;

/** Pure: what to do with a write numbered `seq` from a writer whose highest applied seq is `last` (undefined: none remembered). */
export function writeDecision(last: number | undefined, seq: number): "apply" | "duplicate" {
  return last !== undefined && seq <= last ? "duplicate" : "apply";
}

/** The highest seq applied per writer, for one process; bounded to MAX_WRITERS_PER_PROCESS writers. */
export class WriterSeqs {
  /** In order of last write: the first is the one evicted. */
  private readonly last = new Map<string, number>();

  constructor(private readonly maxWriters = MAX_WRITERS_PER_PROCESS) {}

  decide(writer: string, seq: number): "apply" | "duplicate" {
    return writeDecision(this.last.get(writer), seq);
  }

  /** After the write was applied: `seq` is the writer's highest, and the writer the most recent. */
  applied(writer: string, seq: number): void {
    this.last.delete(writer);
    this.last.set(writer, seq);
    while (this.last.size > this.maxWriters) this.last.delete(this.last.keys().next().value as string);
  }

  get writers(): number {
    return this.last.size;
  }
}
