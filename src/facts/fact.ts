import type { ShellCommand } from '../core/shell.js'

/**
 * A read-only probe of a host: a shell command and a parser of its output (pyinfra's FactBase).
 * Facts carry no I/O of their own: the probe runs many of them in one round trip, and unit tests feed
 * them captured output.
 */
export interface Fact<T> {
  /** Unique per command+arguments: facts with the same id are gathered once. */
  readonly id: string
  readonly command: ShellCommand
  /** A plain function (no `this`): a fact is data, copied and recombined by the probe. */
  readonly parse: (stdout: string, exitCode: number) => T
  /** Its output holds secret values: the probe that gathers it is never echoed (--verbose). */
  readonly sensitive?: boolean
  /** The only paths whose change can alter this fact; unset: anything can (see engine/stale-facts.ts). */
  readonly paths?: readonly string[]
  /** Facts of one batch that meet in a probe run as one command, not one each (see FactBatch). */
  readonly batch?: { readonly with: FactBatch; readonly item: string }
  /**
   * A few milliseconds at most (coreutils, dpkg-query, systemctl show; no interpreter, database or network): the
   * probe runs it in turn with the other quick ones, which costs fewer host processes than running it beside them.
   */
  readonly quick?: boolean
}

/**
 * One command that gathers a kind of fact for many items at once: one `stat` for all files instead of
 * four processes per file. split() cuts its output back into what `command` of each fact would have
 * printed, so a fact parses the same output batched or alone.
 */
export interface FactBatch {
  readonly id: string
  command(items: readonly string[]): ShellCommand
  split(stdout: string, exitCode: number, items: readonly string[]): { stdout: string; code: number }[]
}

export function defineFact<T>(
  id: string,
  command: ShellCommand,
  parse: (stdout: string, exitCode: number) => T,
  options: { sensitive?: boolean; paths?: readonly string[]; batch?: Fact<T>['batch']; quick?: boolean } = {},
): Fact<T> {
  return {
    id,
    command,
    parse,
    ...(options.sensitive ? { sensitive: true } : {}),
    ...(options.paths ? { paths: options.paths } : {}),
    ...(options.batch ? { batch: options.batch } : {}),
    ...(options.quick ? { quick: true } : {}),
  }
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
