/**
 * Deliberately broken segment readers. The segment property
 * (test/properties/receiver-segment.test.ts) must catch each one.
 */
import { parseRecord } from "../../src/receiver/internal/format.js"
import type { NextRecord } from "../../src/receiver/internal/segment.js"

/**
 * The reader of issue 13, finding 1: when the record is short it ensures the bytes the
 * first parse asked for — only the header's when the header straddles the window — and
 * parses a view of just those, so a record whose header crosses the window's edge is
 * reported short ("short record payload") although the file holds all of it.
 */
export const headerOnlyRetry: NextRecord = async (reader, offset) => {
  let parsed = parseRecord(reader.view(offset, reader.available(offset)), 0)
  if (parsed._tag === "Short" && (await reader.ensure(offset, parsed.need)) >= parsed.need)
    parsed = parseRecord(reader.view(offset, parsed.need), 0)
  return parsed
}
