/**
 * The byte path's scanner, for long traces (`cdp-sync check-trace` runs at millions of
 * lines per second): a line that is a flat JSON object (strings without escapes or
 * control characters, numbers, literals; known fields in ASCII) becomes its event
 * directly, without decoding it to a string. It only ever decides a *success*, and only
 * one `decodeEvent` (../Trace.ts) decides identically (same JSON grammar, same numbers,
 * the last duplicate key wins, unknown fields ignored): every other line, errors
 * included, is decoded to text and goes through `decodeEvent`
 * (test/conformance/trace-bytes.test.ts checks the two agree).
 */
import * as Event from "../Event.js"

// `ignoreBOM`: keep a U+FEFF in the text, as decoding the whole stream would.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true })

// Slots of the known fields; the values of the line being scanned (reset per line).
const TYPE = 0
const SEQ = 1
const OFFSET = 2
const LENGTH = 3
const REASON = 4
const RECEIVER_SEQ = 5
const EPOCH = 6
const BLOCKS = 7
const BLOCK = 8
const EXPECTED = 9
const SLOTS = 10
const NONE = -1
const slots: Array<unknown> = [
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  undefined
]
/** A string value in a slot: its bytes are `textFrom[slot]` to `textTo[slot]` (decoded only when needed). */
const TEXT: unknown = Symbol("text")
const textFrom = new Float64Array(SLOTS)
const textTo = new Float64Array(SLOTS)

/** Whether `b[from, from + word.length)` spells the ASCII `word`. */
const bytesAre = (b: Uint8Array, from: number, word: string): boolean => {
  for (let k = 0; k < word.length; k++) if (b[from + k] !== word.charCodeAt(k)) return false
  return true
}

/** The slot of the key `b[from, from + n)`, or `NONE` for a field no event has. */
const slotOf = (b: Uint8Array, from: number, n: number): number => {
  switch (n) {
    case 3:
      return bytesAre(b, from, "seq") ? SEQ : NONE
    case 4:
      return bytesAre(b, from, "type") ? TYPE : NONE
    case 5:
      return b[from] === 101
        ? bytesAre(b, from, "epoch")
          ? EPOCH
          : NONE
        : bytesAre(b, from, "block")
          ? BLOCK
          : NONE
    case 6:
      switch (b[from]) {
        case 111:
          return bytesAre(b, from, "offset") ? OFFSET : NONE
        case 108:
          return bytesAre(b, from, "length") ? LENGTH : NONE
        case 114:
          return bytesAre(b, from, "reason") ? REASON : NONE
        default:
          return bytesAre(b, from, "blocks") ? BLOCKS : NONE
      }
    case 8:
      return bytesAre(b, from, "expected") ? EXPECTED : NONE
    case 11:
      return bytesAre(b, from, "receiverSeq") ? RECEIVER_SEQ : NONE
    default:
      return NONE
  }
}

/** The event type spelled by `b[from, from + n)` (the interned constant), or `undefined`. */
const typeOf = (b: Uint8Array, from: number, n: number): Event.EventType | undefined => {
  let name: Event.EventType
  switch (n) {
    case 5:
      name = "Acked"
      break
    case 8:
      name = "LinkLost"
      break
    case 9:
      name = "BlockSent"
      break
    case 11:
      name = b[from] === 82 ? "ResyncBegun" : "PassStarted"
      break
    case 12:
      name = b[from] === 87 ? "WriteTracked" : "LinkRestored"
      break
    case 13:
      name = b[from] === 87 ? "WriteStreamed" : "SyncActivated"
      break
    case 15:
      name = "ResyncActivated"
      break
    case 21:
      name = "DiscontinuityReported"
      break
    default:
      return undefined
  }
  return bytesAre(b, from, name) ? name : undefined
}

/** The resync reason spelled by `b[from, from + n)`, or `undefined`. */
const resyncReasonOf = (b: Uint8Array, from: number, n: number): Event.ResyncReason | undefined => {
  for (const reason of Event.ResyncReason.literals)
    if (reason.length === n && bytesAre(b, from, reason)) return reason
  return undefined
}

/** End (the closing quote) of the string opening at `b[i]`, or -1 if it needs the general path. */
const stringEnd = (b: Uint8Array, i: number, n: number): number => {
  for (let j = i + 1; j < n; j++) {
    const c = b[j]!
    if (c === 34) return j
    if (c === 92 || c < 32) return -1
  }
  return -1
}

let scanned = 0

/** End of the JSON number at `b[i]` (its value in `scanned`), or -1 if it is not one. */
const numberEnd = (b: Uint8Array, i: number, n: number): number => {
  const start = i
  let c = b[i]!
  let plain = true
  if (c === 45) {
    plain = false
    c = ++i < n ? b[i]! : 0
  }
  let value = 0
  if (c === 48) c = ++i < n ? b[i]! : 0
  else if (c >= 49 && c <= 57) {
    do {
      value = value * 10 + (c - 48)
      c = ++i < n ? b[i]! : 0
    } while (c >= 48 && c <= 57)
  } else return -1
  if (c === 46) {
    plain = false
    c = ++i < n ? b[i]! : 0
    if (!(c >= 48 && c <= 57)) return -1
    do c = ++i < n ? b[i]! : 0
    while (c >= 48 && c <= 57)
  }
  if (c === 101 || c === 69) {
    plain = false
    c = ++i < n ? b[i]! : 0
    if (c === 43 || c === 45) c = ++i < n ? b[i]! : 0
    if (!(c >= 48 && c <= 57)) return -1
    do c = ++i < n ? b[i]! : 0
    while (c >= 48 && c <= 57)
  }
  // Up to 15 digits the sum is exact; beyond, or with a sign, fraction or exponent,
  // Number rounds the (ASCII) text exactly as JSON.parse does.
  scanned = plain && i - start <= 15 ? value : Number(utf8.decode(b.subarray(start, i)))
  return i
}

const skipWs = (b: Uint8Array, i: number, n: number): number => {
  while (i < n) {
    const c = b[i]!
    if (c !== 32 && c !== 9 && c !== 10 && c !== 13) return i
    i++
  }
  return i
}

/** Scans the flat JSON object `b[from, n)` into `slots`; false when the line needs the general path. */
const scanFlat = (b: Uint8Array, from: number, n: number): boolean => {
  for (let k = 0; k < SLOTS; k++) slots[k] = undefined
  let i = skipWs(b, from, n)
  if (i >= n || b[i] !== 123) return false
  i = skipWs(b, i + 1, n)
  if (i < n && b[i] === 125) return skipWs(b, i + 1, n) === n
  for (;;) {
    if (i >= n || b[i] !== 34) return false
    const keyEnd = stringEnd(b, i, n)
    if (keyEnd < 0) return false
    const slot = slotOf(b, i + 1, keyEnd - i - 1)
    i = skipWs(b, keyEnd + 1, n)
    if (i >= n || b[i] !== 58) return false
    i = skipWs(b, i + 1, n)
    if (i >= n) return false
    const c = b[i]!
    if (c === 34) {
      const end = stringEnd(b, i, n)
      if (end < 0) return false
      if (slot !== NONE) {
        slots[slot] = TEXT
        textFrom[slot] = i + 1
        textTo[slot] = end
      }
      i = end + 1
    } else if (c === 45 || (c >= 48 && c <= 57)) {
      i = numberEnd(b, i, n)
      if (i < 0) return false
      if (slot !== NONE) slots[slot] = scanned
    } else if (c === 116 && i + 4 <= n && bytesAre(b, i, "true")) {
      if (slot !== NONE) slots[slot] = true
      i += 4
    } else if (c === 102 && i + 5 <= n && bytesAre(b, i, "false")) {
      if (slot !== NONE) slots[slot] = false
      i += 5
    } else if (c === 110 && i + 4 <= n && bytesAre(b, i, "null")) {
      if (slot !== NONE) slots[slot] = null
      i += 4
    } else return false // an object, an array, or not JSON
    i = skipWs(b, i, n)
    if (i >= n) return false
    const sep = b[i]
    i++
    if (sep === 125) return skipWs(b, i, n) === n
    if (sep !== 44) return false
    i = skipWs(b, i, n)
  }
}

const isCount = Event.isCount

/** The slot's value as a non-empty ASCII string; `undefined` if it is not one (then the general path decides). */
const asciiText = (b: Uint8Array, slot: number): string | undefined => {
  if (slots[slot] !== TEXT) return undefined
  const from = textFrom[slot]!
  const to = textTo[slot]!
  if (to === from) return undefined
  for (let j = from; j < to; j++) if (b[j]! >= 128) return undefined
  return utf8.decode(b.subarray(from, to))
}

/** The event of the flat line `b[from, n)` if its fields all check, else `undefined`. */
export const decodeFlat = (b: Uint8Array, from: number, n: number): Event.Event | undefined => {
  if (!scanFlat(b, from, n)) return undefined
  if (slots[TYPE] !== TEXT) return undefined
  const seq = slots[SEQ]
  const offset = slots[OFFSET]
  const length = slots[LENGTH]
  const epoch = slots[EPOCH]
  switch (typeOf(b, textFrom[TYPE]!, textTo[TYPE]! - textFrom[TYPE]!)) {
    case "WriteStreamed":
      return isCount(seq) && isCount(offset) && isCount(length)
        ? { type: "WriteStreamed", seq, offset, length }
        : undefined
    case "WriteTracked":
      return isCount(offset) && isCount(length) ? { type: "WriteTracked", offset, length } : undefined
    case "Acked":
      return isCount(seq) ? { type: "Acked", seq } : undefined
    case "BlockSent": {
      const block = slots[BLOCK]
      return isCount(seq) && isCount(block) ? { type: "BlockSent", seq, block } : undefined
    }
    case "LinkLost": {
      const reason = asciiText(b, REASON)
      return reason === undefined ? undefined : { type: "LinkLost", reason }
    }
    case "LinkRestored": {
      const receiverSeq = slots[RECEIVER_SEQ]
      return isCount(receiverSeq) ? { type: "LinkRestored", receiverSeq } : undefined
    }
    case "ResyncActivated": {
      const reason =
        slots[REASON] === TEXT
          ? resyncReasonOf(b, textFrom[REASON]!, textTo[REASON]! - textFrom[REASON]!)
          : undefined
      return isCount(epoch) && reason !== undefined ? { type: "ResyncActivated", epoch, reason } : undefined
    }
    case "ResyncBegun":
      return isCount(epoch) && isCount(seq) ? { type: "ResyncBegun", epoch, seq } : undefined
    case "PassStarted": {
      const blocks = slots[BLOCKS]
      return isCount(epoch) && isCount(blocks) ? { type: "PassStarted", epoch, blocks } : undefined
    }
    case "SyncActivated":
      return isCount(epoch) && isCount(seq) ? { type: "SyncActivated", epoch, seq } : undefined
    case "DiscontinuityReported": {
      const expected = slots[EXPECTED]
      return isCount(expected) ? { type: "DiscontinuityReported", expected } : undefined
    }
    default:
      return undefined
  }
}
