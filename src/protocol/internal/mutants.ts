/**
 * Deliberately broken variants of the wire codec, for the tests that prove the
 * properties catch them. Nothing in the library imports this module.
 */
import { Decoder } from "./wireDecoder.js"

/** A decoder that takes every payload as its header says, without checking its CRC32C. */
export class DecoderSkippingPayloadCrc extends Decoder {
  protected override readonly checkPayloadCrc: boolean = false
}
