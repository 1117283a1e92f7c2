import { inspect } from 'node:util'

/** What every output prints in place of a secret value. */
export const MASK = '********'

/** Every secret value this process has seen; the last line of defence for text that leaves the process. */
const knownValues = new Set<string>()

/**
 * A secret value. It prints as a mask in strings, JSON, util.inspect and template literals;
 * only `reveal()` gives the value, and only code that writes it to stdin or a 0600 file should call it.
 */
export class Secret {
  readonly #value: string
  /** Where the value came from, safe to print: "env DB_PASSWORD", "file ./x", "generated on host". */
  readonly source: string

  constructor(value: string, source: string) {
    this.#value = value
    this.source = source
    if (value.length >= 4) knownValues.add(value)
  }

  reveal(): string {
    return this.#value
  }

  toString(): string {
    return MASK
  }

  toJSON(): string {
    return MASK
  }

  [inspect.custom](): string {
    return `Secret(${MASK} from ${this.source})`
  }

  /** Compare without revealing (constant-time is not needed: both values are ours). */
  equals(other: Secret | string): boolean {
    return this.#value === (other instanceof Secret ? other.#value : other)
  }
}

export function isSecret(value: unknown): value is Secret {
  return value instanceof Secret
}

/** Replace every known secret value in a text with the mask (logs, diffs, errors, command lines). */
export function maskSecrets(text: string): string {
  let out = text
  for (const value of knownValues) {
    if (out.includes(value)) out = out.split(value).join(MASK)
  }
  return out
}
