/**
 * The check a record passes before a byte of it is used (a mount's or a restore's), written
 * once for the main thread (`checkedRecord`) and restore's worker threads
 * (`restoreThreads.ts`), whose code is a string: it holds this function's own source
 * (`recordRefusal.toString()`). So the function names nothing but its arguments: no import,
 * no module constant, no helper (a name from outside would be undefined in the thread). Its
 * literals are format.ts's (`RECORD_HEADER_BYTES` 40, kinds 3..6, flags 3,
 * `MAX_RECORD_PAYLOAD`); it decides as `parseRecord` then `entryMismatch` do, which
 * test/properties/receiver-record-check.test.ts proves over records and damage.
 */

/** CRC32C of `bytes` continuing from `initial` (the addon's, or src/internal/crc32c.ts's). */
export type Crc32c = (bytes: Buffer, initial: number) => number

/**
 * Why the record at byte `o` of `bytes` (which may hold more after it) may not be used
 * against its index entry (the other arguments: the entry's fields but its offset, which is
 * where the bytes were read), or `undefined` when it may: its header's fields plausible, its
 * CRC32C right, every field equal to the entry's.
 */
export function recordRefusal(
  crc32c: Crc32c,
  bytes: Buffer,
  o: number,
  length: number,
  seq: number,
  kind: number,
  flags: number,
  epoch: number,
  position: number,
  time: number,
  crc: number
): string | undefined {
  if (bytes.length - o < 40) return "the segment ends inside the record"
  const kindAt = bytes[o + 4]!
  const flagsAt = bytes[o + 5]!
  if (kindAt < 3 || kindAt > 6) return `unknown record kind ${kindAt}`
  if ((flagsAt & ~3) !== 0) return `unknown record flags ${flagsAt}`
  if (bytes[o + 6] !== 0 || bytes[o + 7] !== 0) return "reserved bytes are not zero"
  // u64 fields: safe integers (high word at most 2^21 - 1), else -1.
  const sh = bytes.readUInt32LE(o + 16)
  const ph = bytes.readUInt32LE(o + 24)
  const th = bytes.readUInt32LE(o + 32)
  const s = sh > 0x1fffff ? -1 : sh * 0x100000000 + bytes.readUInt32LE(o + 12)
  const p = ph > 0x1fffff ? -1 : ph * 0x100000000 + bytes.readUInt32LE(o + 20)
  const t = th > 0x1fffff ? -1 : th * 0x100000000 + bytes.readUInt32LE(o + 28)
  if (s < 1 || p < 0 || t < 0) return "a seq, position or time out of range"
  const stored = bytes.readUInt32LE(o)
  // Writes (3) and blocks (4) carry a payload, markers none.
  if (kindAt === 3 || kindAt === 4 ? stored === 0 || stored > 0xffffffff - 40 : stored !== 0)
    return `implausible payload length ${stored}`
  if (bytes.length - o < 40 + stored) return "the segment ends inside the record"
  let c = crc32c(bytes.subarray(o, o + 36), 0) >>> 0
  if (stored > 0) c = crc32c(bytes.subarray(o + 40, o + 40 + stored), c) >>> 0
  if (c !== bytes.readUInt32LE(o + 36)) return "CRC32C mismatch"
  if (
    s !== seq ||
    kindAt !== kind ||
    flagsAt !== flags ||
    stored !== length ||
    bytes.readUInt32LE(o + 8) !== epoch ||
    p !== position ||
    t !== time ||
    c !== crc
  )
    return "the record's header differs from its index entry"
  return undefined
}
