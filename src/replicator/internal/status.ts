/** What the replicator reports and takes (re-exported by Replicator.ts). */
import type * as State from "../../domain/State.js"

export interface Status {
  readonly mode: State.Mode
  readonly link: State.Link
  readonly epoch: number
  readonly nextSeq: number
  readonly watermark: number
  /** Blocks the receiver may lack that no unacked record will deliver. */
  readonly dirtyBlocks: number
  /** Records sent and not acked. */
  readonly inFlight: number
  /** Records the receiver has not acked (the live RPO in records). */
  readonly lagRecords: number
  /** Age of the oldest unacked record in milliseconds (the live RPO in time). */
  readonly lagMillis: number
  readonly quiescent: boolean
}

/** One guest write: `bytes` at `offset`, both sector aligned. */
export interface GuestWrite {
  readonly offset: number
  readonly bytes: Uint8Array
}
