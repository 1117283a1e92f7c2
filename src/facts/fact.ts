/**
 * A read-only probe of a host: a shell command and a parser of its output (pyinfra's FactBase).
 * Facts carry no I/O of their own: the probe runs many of them in one round trip, and unit tests feed
 * them captured output.
 */
export interface Fact<T> {
  /** Unique per command+arguments: facts with the same id are gathered once. */
  readonly id: string
  readonly command: string
  parse(stdout: string, exitCode: number): T
  /** Its output holds secret values: the probe that gathers it is never echoed (--verbose). */
  readonly sensitive?: boolean
}

export function defineFact<T>(id: string, command: string, parse: (stdout: string, exitCode: number) => T, options: { sensitive?: boolean } = {}): Fact<T> {
  return options.sensitive ? { id, command, parse, sensitive: true } : { id, command, parse }
}

/** Parsed fact values of one host, by fact id. */
export class FactValues {
  readonly #values = new Map<string, unknown>()

  set(id: string, value: unknown): void {
    this.#values.set(id, value)
  }

  has(fact: Fact<unknown>): boolean {
    return this.#values.has(fact.id)
  }

  get<T>(fact: Fact<T>): T {
    if (!this.#values.has(fact.id)) throw new Error(`fact ${fact.id} was not gathered`)
    return this.#values.get(fact.id) as T
  }

  merge(other: FactValues): void {
    for (const [k, v] of other.#values) this.#values.set(k, v)
  }
}
