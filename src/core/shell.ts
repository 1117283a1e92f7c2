import { isSecret } from './secret.js'
import { shellQuote } from './quote.js'

const MAKE: unique symbol = Symbol('ShellCommand')

/**
 * A command line for the host's `sh -c`, made only by `sh`, `raw` or `joinShell`: the one way to build
 * a remote command. The private field makes the type nominal, so a plain string (a template literal
 * with values pasted in) is a type error wherever a ShellCommand is asked for (Connection.run, facts,
 * command resources).
 */
export class ShellCommand {
  readonly #text: string

  /** Only this module holds the token: nothing else can make a ShellCommand from an unchecked string. */
  constructor(token: typeof MAKE, text: string) {
    if (token !== MAKE) throw new TypeError('a ShellCommand is built with sh`…`, raw`…` or joinShell()')
    this.#text = text
  }

  /** The command line as sent. */
  get text(): string {
    return this.#text
  }

  toString(): string {
    return this.#text
  }

  toJSON(): string {
    return this.#text
  }
}

/** One interpolated word: quoted (string, number) or inserted as built (a nested ShellCommand). */
export type ShellWord = string | number | ShellCommand
/** What `sh` accepts in `${…}`: a word, or an array of words (separate quoted words; empty: nothing). */
export type ShellValue = ShellWord | readonly ShellWord[]

function word(value: unknown, position: number): string {
  if (value instanceof ShellCommand) return value.text
  if (typeof value === 'string') return shellQuote(value)
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  // Secrets travel on stdin or in 0600 files: a command line is visible in ps, logs and errors.
  if (isSecret(value))
    throw new TypeError(`sh: value ${position} is a Secret (${value.source}); secrets never go on a command line: pass it on stdin`)
  throw new TypeError(
    `sh: value ${position} is ${value === null ? 'null' : typeof value}; only strings, numbers, arrays of them and built commands can be interpolated`,
  )
}

/**
 * Tagged template for remote commands (zx-style): the literal parts are the trusted script, and
 * every `${value}` is one POSIX-quoted word (shellQuote); an array becomes separate quoted words; a
 * nested ShellCommand (another `sh`, or `raw`) is inserted as built. A Secret is refused, by the
 * types and at run time.
 *
 *     sh`pg_dump ${db} > ${path}`           // pg_dump 'my db' > /backup/x.sql
 *     sh`apt-get install ${packages}`       // apt-get install a b c
 *     sh`cd ${dir} && ${VALIDATE}`          // VALIDATE is itself a ShellCommand
 */
export function sh(strings: TemplateStringsArray, ...values: ShellValue[]): ShellCommand {
  // The cooked literal text, as a plain template literal has it (`\\n` is a backslash and an n).
  const part = (i: number) => {
    const s = strings[i]
    if (s === undefined) throw new TypeError('sh: the template has an invalid escape sequence')
    return s
  }
  let out = part(0)
  values.forEach((value, i) => {
    out += Array.isArray(value) ? value.map((v: unknown) => word(v, i)).join(' ') : word(value, i)
    out += part(i + 1)
  })
  return new ShellCommand(MAKE, out)
}

/**
 * The escape hatch: a fixed fragment of shell the code itself wrote, inserted unquoted: raw`systemctl daemon-reload`.
 * A tagged template that takes no value: `${…}` in it is a type error and throws at run time (use sh`…`, which quotes
 * what it is given), so nothing from the inventory, the host or the user can reach the command line unquoted. Like
 * sh, it reads the cooked text (`\\t` is a backslash and a t; write `\${VAR}` for the shell's own expansion).
 */
export function raw(strings: TemplateStringsArray, ...none: never[]): ShellCommand {
  const called: unknown = strings // as called from plain JavaScript, or as raw(text) past the types
  if (!Array.isArray(called) || !Array.isArray((called as { raw?: unknown }).raw)) {
    throw new TypeError(`raw is a tagged template (raw\`…\`), not a function of ${isSecret(strings) ? 'a Secret' : typeof strings}`)
  }
  if (none.length > 0 || strings.length !== 1) {
    throw new TypeError(
      `raw\`…\` takes fixed text only, got ${strings.length - 1} interpolated value(s): build commands with values through sh\`…\``,
    )
  }
  const text = strings[0]
  if (text === undefined) throw new TypeError('raw: the template has an invalid escape sequence')
  return new ShellCommand(MAKE, text)
}

/** Commands joined by a shell operator: `joinShell(checks, ' && ')`. */
export function joinShell(commands: readonly ShellCommand[], separator: '; ' | ' && ' | ' || ' | ' | ' | '\n'): ShellCommand {
  for (const c of commands) if (!(c instanceof ShellCommand)) throw new TypeError('joinShell: every part must be a built command (sh`…`)')
  return new ShellCommand(MAKE, commands.map((c) => c.text).join(separator))
}
