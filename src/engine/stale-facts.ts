import type { Fact } from '../facts/fact.js'
import type { Change } from '../resources/resource.js'

const trim = (p: string) => p.replace(/\/+$/, '') || '/'
const under = (p: string, dir: string) => p.startsWith(dir === '/' ? '/' : `${dir}/`)

/**
 * Which facts gathered before this run's changes may no longer describe the host. Apply reads a
 * resource's facts again only when they may: after twenty file writes the twenty-first file's state
 * is still the one gathered at the start, and re-reading it would cost a round trip for nothing.
 */
export class StaleFacts {
  readonly #touched: { path: string; below: boolean }[] = []
  #anything = false

  /** The change says how far it reaches (Change.reach): its own paths, what resolves through a link, or anything. */
  noteApplied(change: Change): void {
    if (change.reach === 'anything') this.#anything = true
    // Paths below a re-pointed symlink now resolve elsewhere; below a file or directory nothing moved.
    else for (const t of change.touches) this.#touched.push({ path: trim(t), below: change.reach === 'link' })
  }

  affects(facts: readonly Fact<unknown>[]): boolean {
    if (this.#anything) return true
    if (this.#touched.length === 0) return false
    return facts.some(
      (f) =>
        !f.paths ||
        f.paths.map(trim).some((p) => this.#touched.some((t) => p === t.path || under(t.path, p) || (t.below && under(p, t.path)))),
    )
  }
}
