/**
 * Deliberately broken variants of `Comparisons`, for test/properties/comparisons.test.ts
 * (test/support/mutants.ts describes the practice). Not part of any public declaration.
 */
export const ComparisonsMutants = {
  /** Appends in place from any version: an older version that appends overwrites what a newer one holds. */
  pushInPlace: false
}
