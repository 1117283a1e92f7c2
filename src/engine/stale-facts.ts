import type { Fact } from '../facts/fact.js'
import type { Change } from '../resources/resource.js'

// Changes that alter exactly the paths they touch (and, for a directory, parents it creates):
// writing a file or a line, a directory, a symlink. Anything else (a package, a command, a service
// start) may alter any fact.
const EXACT_REACH = /^(file|dir|symlink|line):/

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

  noteApplied(change: Change): void {
    if (!EXACT_REACH.test(change.resource)) this.#anything = true
    // Paths below a re-pointed symlink now resolve elsewhere; below a file or directory nothing moved.
    else for (const t of change.touches) this.#touched.push({ path: trim(t), below: change.resource.startsWith('symlink:') })
  }

  affects(facts: readonly Fact<unknown>[]): boolean {
    if (this.#anything) return true
    if (this.#touched.length === 0) return false
    return facts.some((f) => !f.paths || f.paths.map(trim).some((p) => this.#touched.some((t) => p === t.path || under(t.path, p) || (t.below && under(p, t.path)))))
  }
}
