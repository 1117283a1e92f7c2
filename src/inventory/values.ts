/**
 * The values a setting may take, each with the message that says what is allowed, and the building
 * blocks of the schema (schema.ts): names, addresses, URLs, paths on the controller and the host,
 * ports, durations and secret references. Controller paths and secrets are marked here so the
 * loader finds and resolves them after parsing (schema-walk.ts).
 */
import { isIP } from 'node:net'
import { z } from 'zod'
import { parseJumpSpec } from '../ssh/endpoint.js'
import { closestMatch, withHint } from './errors.js'

// ---------------------------------------------------------------------------------------------
// Names and values

const DNS_LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?'
/** Lowercase DNS name: what serverName, publicHost and element.host may be. */
export const DNS_NAME = new RegExp(`^(?=.{1,253}$)${DNS_LABEL}(?:\\.${DNS_LABEL})*$`)
/** serverName may carry a port: example.org:8448 */
export const SERVER_NAME = new RegExp(
  `^(?=.{1,253}(?::|$))${DNS_LABEL}(?:\\.${DNS_LABEL})*(?::(?:6553[0-5]|655[0-2]\\d|65[0-4]\\d{2}|6[0-4]\\d{3}|[1-5]\\d{4}|[1-9]\\d{0,3}))?$`,
)
const ANY_CASE_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
const ADDRESS_DNS = new RegExp(`^(?=.{1,253}$)${ANY_CASE_LABEL}(?:\\.${ANY_CASE_LABEL})*\\.?$`)
/** Inventory host names (keys of `hosts`). */
export const HOST_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
export const SSH_USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/
export const PG_IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/
export const SYNAPSE_VERSION = /^\d+\.\d+\.\d+(?:rc\d+)?$/
export const ELEMENT_VERSION = /^v?\d+\.\d+\.\d+(?:-rc\.?\d+)?$/
export const SHA256 = /^[0-9a-fA-F]{64}$/
export const APT_WORD = /^[a-z0-9][a-z0-9.+_-]{0,63}$/
export const EMAIL = /^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$/
/** Characters never allowed in URLs we pass on (whitespace, quotes, backticks, backslash, angle brackets). */
// eslint-disable-next-line no-control-regex -- control characters are what this refuses
const URL_FORBIDDEN = /[\s"'`$\\<>{}|^\u0000-\u001f\u007f]/

/** A dotted name whose last label is all digits is a mistyped IPv4 address, not a DNS name. */
function numericTld(value: string): boolean {
  return /(?:^|\.)\d+\.?$/.test(value)
}

/** Lowercase DNS name (not a mistyped IPv4 address). */
export function isDnsName(value: string): boolean {
  return DNS_NAME.test(value) && (!numericTld(value) || isIP(value) === 4)
}

/** serverName: DNS name or IPv4 address, optionally with :port. */
export function isServerName(value: string): boolean {
  return SERVER_NAME.test(value) && (!numericTld(value.replace(/:\d+$/, '')) || isIP(value.replace(/:\d+$/, '')) === 4)
}

export function isAddress(value: string): boolean {
  return isIP(value) !== 0 || (ADDRESS_DNS.test(value) && !numericTld(value))
}

export function isHttpUrl(value: string): boolean {
  if (URL_FORBIDDEN.test(value)) return false
  try {
    const url = new URL(value)
    return (url.protocol === 'https:' || url.protocol === 'http:') && url.hostname !== ''
  } catch {
    return false
  }
}

/** Host-side path: absolute, no `.`/`..` components, only characters that need no quoting. */
export function hostPathProblem(value: string): string | undefined {
  if (!value.startsWith('/')) return 'must be an absolute path (starting with /)'
  const parts = value.split('/').filter((part) => part !== '')
  if (parts.some((part) => part === '..' || part === '.')) return 'must not contain "." or ".." components'
  if (!/^[A-Za-z0-9._+@/-]+$/.test(value)) return 'may only contain letters, digits and . _ + @ - /'
  if (value.endsWith('/')) return 'must name a file, not end with /'
  return undefined
}

/**
 * `user@host:port`, `host:port`, `host`: the jump host when it is not an inventory host. Split as
 * ssh_config's ProxyJump is (parseJumpSpec), then held to what an inventory may say.
 */
export function parseJump(value: string): { user?: string; host: string; port?: number } | undefined {
  let jump: ReturnType<typeof parseJumpSpec>
  try {
    jump = parseJumpSpec(value)
  } catch {
    return undefined
  }
  if (jump.user !== undefined && !/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(jump.user)) return undefined
  if (!isAddress(jump.host)) return undefined
  if (jump.port !== undefined && (jump.port < 1 || jump.port > 65535)) return undefined
  return jump
}

// ---------------------------------------------------------------------------------------------
// Building blocks (each check carries the same "what is allowed" message)

export function pattern(regex: RegExp, message: string) {
  return z.string({ error: message }).regex(regex, { error: message })
}

export function predicate(check: (value: string) => boolean, message: string) {
  return z.string({ error: message }).refine(check, { error: message })
}

export function integer(min: number, max: number, message = `expected an integer between ${min} and ${max}`) {
  return z.number({ error: message }).int({ error: message }).min(min, { error: message }).max(max, { error: message })
}

const PORT_MESSAGE = 'expected an integer between 1 and 65535'
export const port = () => integer(1, 65535, PORT_MESSAGE)
export const bool = () => z.boolean({ error: 'expected true or false' })

const SECONDS_MESSAGE = 'expected a number of seconds greater than 0 (at most 86400)'
export const seconds = () => z.number({ error: SECONDS_MESSAGE }).gt(0, { error: SECONDS_MESSAGE }).max(86_400, { error: SECONDS_MESSAGE })

const DNS_NAME_MESSAGE =
  'expected a DNS name: lowercase letters a-z, digits 0-9 and "-" in dot-separated labels (e.g. matrix.example.org); no spaces, quotes or other characters'
export const SERVER_NAME_MESSAGE =
  'expected a DNS name: lowercase letters a-z, digits 0-9 and "-" in dot-separated labels, optionally followed by :port (e.g. example.org or example.org:8448); no spaces, quotes or other characters'
export const HOST_NAME_MESSAGE =
  'expected a host name made of letters, digits, "-", "_" and "." (starting with a letter or digit, at most 63 characters)'
export const ADDRESS_MESSAGE = 'expected an IPv4 address, an IPv6 address or a DNS name (letters, digits, "-" and ".")'
const URL_MESSAGE = 'expected an http:// or https:// URL without spaces, quotes, backticks or "$"'
const CONTROLLER_PATH_MESSAGE = 'expected a path on this machine (relative to the inventory file, or absolute, ~ allowed)'

export const dnsName = () => pattern(DNS_NAME, DNS_NAME_MESSAGE).refine(isDnsName, { error: DNS_NAME_MESSAGE })
export const url = () => predicate(isHttpUrl, URL_MESSAGE)
/** Leaves the loader resolves after parsing (found by walking the schema, see `leavesOf`). */
export const CONTROLLER_PATHS = new WeakSet<object>()
export const SECRETS = new WeakMap<object, string | undefined>()

/** A file or directory on the controller; the loader resolves it relative to the inventory file. */
export function controllerPath() {
  const schema = z
    .string({ error: CONTROLLER_PATH_MESSAGE })
    .min(1, { error: CONTROLLER_PATH_MESSAGE })
    // eslint-disable-next-line no-control-regex -- NUL is what this refuses
    .refine((value) => !/[\u0000\n\r]/.test(value), {
      error: 'expected a path on this machine; newlines and NUL characters are not allowed',
    })
  CONTROLLER_PATHS.add(schema)
  return schema
}
export const hostPath = () =>
  z.string({ error: 'expected an absolute path on the host' }).superRefine((value, ctx) => {
    const problem = hostPathProblem(value)
    if (problem) ctx.addIssue({ code: 'custom', message: `expected an absolute path on the host: it ${problem}`, input: value })
  })
/** A reference to another inventory host by name (existence is checked after parsing). */
export const hostReference = () => pattern(HOST_NAME, HOST_NAME_MESSAGE)

// ---------------------------------------------------------------------------------------------
// Secrets: never inline

const SECRET_FORMS = 'write { env: NAME }, { file: path } or { generate: true }'
const SECRET_KEYS = ['env', 'file', 'generate'] as const

/** The message for a value that is not a secret reference, built from what was written. */
export function secretRefMessage(input: unknown): string {
  if (typeof input === 'string' || typeof input === 'number' || typeof input === 'boolean') {
    return withHint('inline secret values are not allowed: a secret must not be written into the inventory', SECRET_FORMS)
  }
  if (input === undefined) return withHint('expected a secret reference', SECRET_FORMS)
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return withHint('expected a secret reference (a mapping with one key: env, file or generate), got {got}', SECRET_FORMS)
  }
  const keys = Object.keys(input)
  const unknown = keys.filter((key) => !(SECRET_KEYS as readonly string[]).includes(key))
  if (unknown.length > 0) {
    const key = unknown[0]!
    const close = closestMatch(key, SECRET_KEYS)
    return withHint(
      close
        ? `unknown key "${key}"; did you mean "${close}"?`
        : `unknown key "${key}"; a secret reference has one of the keys env, file or generate`,
      SECRET_FORMS,
    )
  }
  if (keys.length !== 1) {
    return withHint(
      `a secret reference has exactly one key (env, file or generate), got ${keys.length === 0 ? 'none' : keys.join(' and ')}`,
      SECRET_FORMS,
    )
  }
  const record = input as Record<string, unknown>
  if ('generate' in record)
    return withHint(
      `generate must be true, got ${JSON.stringify(record.generate)}`,
      'write { generate: true }, or use { env: NAME } or { file: path }',
    )
  if ('env' in record) return 'expected the name of an environment variable (letters, digits and _, not starting with a digit)'
  return 'expected the path of a file on this machine (relative to the inventory file, or absolute)'
}

/**
 * A secret setting. `generatedName`: the stable name a generated value has on the host
 * (`{ generate: true }` -> `{ kind: 'generate', name }`); without one it cannot be generated.
 */
export function secretRef(generatedName?: string) {
  const schema = z
    .union(
      [
        z.strictObject({
          env: pattern(ENV_NAME, 'expected the name of an environment variable (letters, digits and _, not starting with a digit)'),
        }),
        z.strictObject({ file: controllerPath() }),
        z.strictObject({ generate: z.literal(true) }),
      ],
      { error: (issue) => secretRefMessage(issue.input) },
    )
    .describe('A secret: { env: NAME }, { file: path } on this machine, or { generate: true } (made and kept on the host)')
  SECRETS.set(schema, generatedName)
  return schema
}

/** Made on the host unless given. */
export const GENERATE = { generate: true } as const
