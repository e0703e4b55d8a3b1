/** The example trace of design §5, verbatim. */
export const designExample = `{"type":"header","version":1,"blockSize":65536,"blockCount":1024,"initial":"in-sync"}
{"type":"WriteStreamed","seq":1,"offset":0,"length":4096}
{"type":"Acked","seq":1}
{"type":"LinkLost","reason":"ack-timeout"}
{"type":"ResyncActivated","epoch":1,"reason":"interruption"}
{"type":"WriteTracked","offset":65536,"length":131072}
{"type":"LinkRestored","receiverSeq":1}
{"type":"ResyncBegun","epoch":1,"seq":2}
{"type":"PassStarted","epoch":1,"blocks":2}
{"type":"BlockSent","seq":3,"block":1}
{"type":"BlockSent","seq":4,"block":2}
{"type":"Acked","seq":4}
{"type":"SyncActivated","epoch":1,"seq":5}
{"type":"WriteStreamed","seq":6,"offset":8192,"length":512}`
