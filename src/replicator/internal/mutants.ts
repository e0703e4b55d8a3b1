/**
 * Deliberately broken variants of the replicator, for the test suite's mutants only.
 * Not part of the public API: no entry point exports this module, and nothing but a
 * test sets a switch (a child process under test sets it from its own arguments).
 */
export const mutants = {
  /**
   * Every start is taken as clean, whatever the journal says: the replicator trusts
   * the caller's word, as `uncleanStart` (default false) once did. After a kill the
   * writes that reached the disk but not the journal are never resent.
   */
  assumeCleanStart: false
}
