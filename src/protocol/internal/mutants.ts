/**
 * Deliberately broken variants of the wire codec, for the tests that prove the
 * properties catch them. Nothing in the library imports this module.
 */
import { makeSlabPool } from "../../internal/slab.js"
import { HEADER_BYTES } from "./wireFrame.js"
import { Decoder } from "./wireDecoder.js"

/** A decoder that takes every payload as its header says, without checking its CRC32C. */
export class DecoderSkippingPayloadCrc extends Decoder {
  protected override readonly checkPayloadCrc: boolean = false
}

const tails = makeSlabPool({ slabBytes: 1 << 20, largest: 1 << 18, keep: 8 })

/**
 * A lending decoder (`lendHeaderBytes`) whose copies of payloads that span chunks reserve no
 * room of their own: it lends the 40 bytes before the copy in its slab, the tail of another
 * copy that may not be written yet (or, first in a slab, room it does not have).
 */
export class DecoderLendingCopyTails extends Decoder {
  protected override copyRoom(n: number): Uint8Array {
    const lease = tails.room(n)
    this.copied = lease.release
    const b = lease.bytes
    if (this.lendHeaderBytes)
      this.lent = new Uint8Array(b.buffer, Math.max(0, b.byteOffset - HEADER_BYTES), n + HEADER_BYTES)
    return b
  }
}
