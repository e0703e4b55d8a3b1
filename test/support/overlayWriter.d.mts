/** Types of test/support/overlayWriter.mjs for the test that drives it. */
export declare const pointByte: (i: number) => number
export declare const roundWrites: (
  r: number,
  diskBytes: number
) => Array<{ readonly offset: number; readonly bytes: Buffer }>
