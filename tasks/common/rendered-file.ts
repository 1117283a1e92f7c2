/**
 * What every template returns: the full content of one file on the host, and who may read it.
 * Templates are pure (no I/O, no clock, no randomness): the same settings give the same bytes,
 * which is what lets a converged host plan to nothing.
 */
export interface RenderedFile {
  /** Absolute path on the host. */
  path: string
  content: string
  /** Permission bits, e.g. 0o640. */
  mode: number
  owner: string
  group: string
  /** Holds a secret: written 0640 or stricter, and its diff is masked. */
  sensitive: boolean
}
