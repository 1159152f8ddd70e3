/**
 * This terminal's keystrokes on their way to a follower (`remote shell`,
 * `remote attach` of a terminal), with the detach key acted on as soon as it
 * is read. While the follower holds input (the host refuses it: the process
 * reads none; or its queue is full), the terminal is still read: what comes is
 * kept here, in order, up to HELD_INPUT_MAX_BYTES, and handed on once the hold
 * ends. So the detach key typed after input the process does not take still
 * detaches; before, reading stopped with the hold and the key waited behind
 * it until the give-up, a minute later. Only input past the bound stops
 * reading (the terminal itself then holds the rest, in order, and a key typed
 * after it comes when the paste before it has moved).
 */
import { InputQueue } from "./input.ts";
import { splitAtDetachKey } from "./offsets.ts";

/** Keystrokes kept while the follower holds input; past this, the terminal is not read until they move on. */
export const HELD_INPUT_MAX_BYTES = 1024 * 1024;
/** Held input is handed on in pieces of at most this (each may meet a new hold). */
const HANDOVER_BYTES = 64 * 1024;

export type KeyboardSink = {
  /** Queues input; a returned promise holds more until it settles (follow.ts Follower.write). */
  write(data: Uint8Array): Promise<void> | undefined;
  detach(): void;
};

export class KeyboardInput {
  private readonly held = new InputQueue();
  /** The sink's hold, while there is one. */
  private hold: Promise<void> | undefined;
  /** Settled when the held bytes are under their bound again (the terminal is read again). */
  private room: PromiseWithResolvers<void> | undefined;
  private detached = false;

  constructor(
    private readonly sink: KeyboardSink,
    private readonly detachKey: number | undefined,
    private readonly maxHeldBytes = HELD_INPUT_MAX_BYTES,
  ) {}

  /** Bytes held here now (not yet given to the sink). */
  get heldBytes(): number {
    return this.held.bytes;
  }

  /** One read of the terminal; a returned promise means: read no more until it settles. */
  take(data: Uint8Array): Promise<void> | undefined {
    if (this.detached) return undefined;
    const { send, detach } = splitAtDetachKey(data, this.detachKey);
    if (this.hold || this.held.bytes > 0) this.held.push(send);
    else this.follow(this.sink.write(send));
    if (detach) {
      this.detached = true;
      // What was typed before the key goes first (the detach lets it reach the process if it can; the rest is named).
      const before = this.held.peek(this.held.bytes);
      this.held.clear();
      this.sink.write(before);
      this.release();
      this.sink.detach();
      return undefined;
    }
    if (this.held.bytes < this.maxHeldBytes) return undefined;
    this.room ??= Promise.withResolvers<void>();
    return this.room.promise;
  }

  private follow(hold: Promise<void> | undefined): void {
    if (!hold) return;
    this.hold = hold;
    void hold.then(() => {
      if (this.hold !== hold) return;
      this.hold = undefined;
      this.handOver();
    });
  }

  /** After a hold: what waited goes on, in order, until the next hold. */
  private handOver(): void {
    while (!this.detached && !this.hold && this.held.bytes > 0) {
      const piece = this.held.peek(HANDOVER_BYTES); // the sink copies it
      this.held.shift(piece.length);
      this.follow(this.sink.write(piece));
    }
    if (this.held.bytes < this.maxHeldBytes) this.release();
  }

  private release(): void {
    this.room?.resolve();
    this.room = undefined;
  }
}
