/**
 * The receiver's side of a connection after the hello, one record at a time: the record
 * is checked against the disk, sequenced by the pure rules of `domain/Receiver`, and the
 * verdict handed to the receiver's log. One piece for the real service
 * (`src/receiver/ReceiverService.ts`) and the in-memory receiver
 * (`src/adapters/internal/receiverStore.ts`); what "append", "ack" and "gap" do is theirs.
 */
import type * as Geometry from "../domain/Geometry.js"
import * as Receiver from "../domain/Receiver.js"
import { checkRecord, type Record, recordKind, type WireError } from "./internal/wireFrame.js"

/** A disk's sequencing state; the receiver keeps one per disk, across its connections. */
export interface Sequenced {
  receiver: Receiver.ReceiverState
}

/** What a receiver does with a verdict; `Stop` is its reason to end the connection. */
export interface Log<Stop> {
  readonly geometry: Geometry.Geometry
  /** The newest durable seq: a duplicate is acked again with it (never applied twice). */
  readonly durable: () => number
  /** An accepted record, in seq order; the ack follows once it is durable. */
  readonly append: (record: Record, recoveryPoint: boolean) => void
  readonly ack: (seq: number) => void
  /** Tell the filter the seq it must resend from. */
  readonly gap: (expected: number) => Stop | undefined
  /** A record after a gap, dropped until the filter resends from the gap. */
  readonly rejected: () => void
}

/**
 * Receives one record on `disk`: a record that does not fit the disk is the `WireError`
 * that closes the connection; otherwise `disk.receiver` moves on and `log` is told.
 */
export const receive = <Stop>(
  disk: Sequenced,
  log: Log<Stop>,
  record: Record
): WireError | Stop | undefined => {
  const invalid = checkRecord(log.geometry, record)
  if (invalid !== undefined) return invalid
  const kind = recordKind(record)
  const verdict = Receiver.verdictOn(
    disk.receiver,
    record.seq,
    kind,
    record._tag === "ResyncBegin" ? record.base : record.seq - 1
  )
  disk.receiver = Receiver.after(disk.receiver, record.seq, kind, verdict)
  switch (verdict._tag) {
    case "Accept":
      log.append(record, verdict.recoveryPoint)
      return undefined
    case "Duplicate": {
      const durable = log.durable()
      if (durable > 0) log.ack(durable)
      return undefined
    }
    case "Gap":
      return log.gap(verdict.expected)
    case "Rejected":
      log.rejected()
      return undefined
  }
}
