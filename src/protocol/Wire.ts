/**
 * The wire codec between the filter and the log receiver (design §6, docs/wire.md):
 * length-prefixed binary frames with a fixed 40-byte big-endian header, a CRC32C over
 * the payload and one over the header.
 *
 * `encode` turns a frame into bytes; a `Decoder` turns bytes that arrive in arbitrary
 * chunks back into frames, or into a typed `WireError` (never a throw, never a hang).
 */
import { Channel, Chunk, Stream } from "effect"
import {
  Decoder,
  type DecoderOptions,
  makeDecoder,
  payloadRelease,
  verifiedPayloadCrc
} from "./internal/wireDecoder.js"
import { encode, encodePartsWith, encodeWith } from "./internal/wireEncode.js"
import { type Frame, WireError } from "./internal/wireFrame.js"

export {
  blockDigest,
  blockDigests,
  blockDigestsInto,
  DIGEST_ALGORITHM,
  DIGEST_ALGORITHMS,
  type DigestAlgorithm,
  DigestCode,
  type DigestHasher,
  defaultDigestAlgorithm,
  digestAlgorithmOf,
  digestAvailable,
  digestHasher
} from "./internal/blockDigest.js"
export {
  checkChecksumRequest,
  checkRecord,
  DEFAULT_MAX_FRAME_BYTES,
  DIGEST_BYTES,
  digestAt,
  HEADER_BYTES,
  Kind,
  MAGIC,
  MAX_CHECKSUM_BLOCKS,
  Offset,
  recordKind,
  recordKindCode,
  MAX_HELLO_FRAME_BYTES,
  VERSION,
  WireError,
  WireErrorReason
} from "./internal/wireFrame.js"
export type {
  Ack,
  Block,
  ChecksumRefused,
  ChecksumReply,
  ChecksumRequest,
  Frame,
  Gap,
  Hello,
  KeepAlive,
  Record,
  Refuse,
  ResyncBegin,
  ResyncEnd,
  Welcome,
  Write
} from "./internal/wireFrame.js"
/** Encoders that carve frames from a caller's allocator (the TCP client's slabs). */
export { Decoder, type DecoderOptions, encode, encodePartsWith, encodeWith, makeDecoder }
/** The payload CRC a decoder checked for a write or block frame it made (the receiver's log reuses it). */
export { verifiedPayloadCrc }
/** The release of a decoded payload's pooled copy, for its consumer to call once it is written. */
export { payloadRelease }

/**
 * Decodes a byte stream into frames. Frames that precede a corruption are emitted, then
 * the stream fails with the `WireError`; a stream that ends inside a frame fails with
 * `truncated`.
 */
export const decodeStream =
  (options?: DecoderOptions) =>
  <E, R>(self: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Frame, E | WireError, R> =>
    Stream.pipeThroughChannel(
      self,
      Channel.suspend(() => {
        const decoder = makeDecoder(options)
        const loop: Channel.Channel<
          Chunk.Chunk<Frame>,
          Chunk.Chunk<Uint8Array>,
          E | WireError,
          E,
          unknown,
          unknown
        > = Channel.readWithCause({
          onInput: (input: Chunk.Chunk<Uint8Array>) => {
            const out: Array<Frame> = []
            let error: WireError | undefined
            for (const bytes of input) {
              error = decoder.pushInto(bytes, out)
              if (error !== undefined) break
            }
            const next = error === undefined ? loop : Channel.fail(error)
            return out.length === 0 ? next : Channel.zipRight(Channel.write(Chunk.unsafeFromArray(out)), next)
          },
          onFailure: Channel.failCause,
          onDone: () =>
            decoder.buffered === 0
              ? Channel.void
              : Channel.fail(
                  new WireError({
                    reason: "truncated",
                    detail: `the stream ended ${decoder.buffered} bytes into a frame`
                  })
                )
        })
        return loop
      })
    )
