import { inspect } from 'node:util'

/** What every output prints in place of a secret value. */
export const MASK = '********'

/** Every secret value this process has seen, with the forms it takes in output (see forms()). */
const knownValues = new Set<string>()
/** All of knownValues, longest first, as one alternation; rebuilt after a value is added. */
let knownPattern: RegExp | undefined

/** Shorter values are not masked: "true" or "1234" would blank out unrelated text. */
const MIN_LENGTH = 4

/**
 * The text a value may appear as: itself, and escaped inside a JSON string (a value with `"`, `\` or a
 * control character). Live output is masked line by line (LineMasker), so a value that spans lines is
 * masked in whole texts (reports, logs, errors) but not in --verbose output.
 */
function forms(value: string): string[] {
  return [value, JSON.stringify(value).slice(1, -1)].filter((v) => v.length >= MIN_LENGTH)
}

function remember(value: string): void {
  if (value.length < MIN_LENGTH) return
  for (const form of forms(value)) {
    if (knownValues.has(form)) continue
    knownValues.add(form)
    knownPattern = undefined
  }
}

/** Values longer than this are masked by plain search, not in the one alternation. */
const REGEXP_MAX_VALUE = 1024

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** user:password@ in any URL (scheme://user:password@host): the password part. */
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/[^\s/?#@:]*):([^\s/?#@]*)@/gi

/** A secret as written in the inventory: never the value inline. */
export type SecretRef = { env: string } | { file: string } | { generate: true }

/** A secret after loading: env/file are read on the controller; generated ones are read or made on the host. */
export type SecretValue = { kind: 'value'; secret: Secret } | { kind: 'generate'; name: string }

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
    remember(value)
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

/**
 * Replace every known secret value in a text with the mask (logs, diffs, errors, command lines), and the
 * password of any URL with credentials. One pass, longest value first, so a secret that begins with
 * another secret is masked whole. Mask text before it is serialised (maskJson) and live output per line
 * (LineMasker): a value escaped by JSON or split across chunks is not found here.
 */
export function maskSecrets(text: string): string {
  let out = text
  if (knownValues.size > 0) {
    const longestFirst = [...knownValues].sort((a, b) => b.length - a.length)
    // A very long value (a key file, a large test payload) would make the alternation too large for
    // RegExp and break every later mask: those go first, as plain text, and are still longest first.
    for (const value of longestFirst) if (value.length > REGEXP_MAX_VALUE && out.includes(value)) out = out.split(value).join(MASK)
    knownPattern ??= new RegExp(
      longestFirst
        .filter((v) => v.length <= REGEXP_MAX_VALUE)
        .map(escapeRegExp)
        .join('|') || '(?!)',
      'g',
    )
    out = out.replace(knownPattern, MASK)
  }
  return out.replace(URL_CREDENTIALS, (_m, prefix: string) => `${prefix}:${MASK}@`)
}

/** JSON text of a value with every string masked before serialisation (then no escaping can hide a secret). */
export function maskJson(value: unknown, indent?: number): string {
  return JSON.stringify(maskDeep(value), null, indent)
}

/** A copy of plain data with every string (keys included) masked; Secrets become the mask. */
export function maskDeep(value: unknown): unknown {
  if (typeof value === 'string') return maskSecrets(value)
  if (value instanceof Secret) return MASK
  if (Array.isArray(value)) return value.map(maskDeep)
  if (value !== null && typeof value === 'object') {
    const json = (value as { toJSON?: () => unknown }).toJSON
    if (typeof json === 'function') return maskDeep(json.call(value))
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [maskSecrets(k), maskDeep(v)]))
  }
  return value
}

/**
 * Treat the credentials of a URL (scheme://user:password@host/...) as secrets: the password as written
 * (percent-encoded) and decoded is masked wherever it appears later. Returns the URL with the password
 * masked, for plans and messages.
 */
export function registerUrlCredentials(url: string, source: string): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return maskSecrets(url)
  }
  if (parsed.password) {
    new Secret(parsed.password, `password in ${source}`)
    try {
      new Secret(decodeURIComponent(parsed.password), `password in ${source}`)
    } catch {
      // A malformed escape: the raw form is registered.
    }
  }
  return maskSecrets(url)
}

/**
 * Masks live output line by line: a chunk is cut anywhere, so a secret may arrive in two chunks. Complete
 * lines go out masked at once; the rest waits for its newline or for flush() (the end of the command).
 */
export class LineMasker {
  #pending = ''

  constructor(private readonly emit: (maskedLine: string) => void) {}

  /** Text from a stream; emits each complete line (with its newline), masked. */
  push(chunk: string): void {
    const text = this.#pending + chunk
    const end = text.lastIndexOf('\n')
    if (end < 0) {
      this.#pending = text
      return
    }
    this.#pending = text.slice(end + 1)
    for (const line of text.slice(0, end + 1).split(/(?<=\n)/)) this.emit(maskSecrets(line))
  }

  /** The last line without a newline, if any (emitted with one). */
  flush(): void {
    if (this.#pending === '') return
    const rest = this.#pending
    this.#pending = ''
    this.emit(maskSecrets(rest) + '\n')
  }
}
