/**
 * The inventory file as written (camelCase keys, everything under `vars` optional because values
 * are merged from `defaults` and the host), and the defaults filled in afterwards.
 *
 * Messages written here say what is allowed; the loader adds what it got (", got "abc"") and the
 * position. A message may hold the placeholder `{got}` to put the value elsewhere, and a hint
 * after `withHint`.
 */
import { isIP } from 'node:net'
import { z } from 'zod'
import { parseJumpSpec } from '../ssh/endpoint.js'
import { closestMatch, withHint } from './errors.js'
import { ROLES } from './types.js'
import { KINDS, WORKER_KINDS } from '../synapse/worker-kinds.js'
import { PRESETS, WORKER_PRESETS } from '../synapse/worker-presets.js'

// ---------------------------------------------------------------------------------------------
// Names and values

const DNS_LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?'
/** Lowercase DNS name: what serverName, publicHost and element.host may be. */
export const DNS_NAME = new RegExp(`^(?=.{1,253}$)${DNS_LABEL}(?:\\.${DNS_LABEL})*$`)
/** serverName may carry a port: example.org:8448 */
export const SERVER_NAME = new RegExp(`^(?=.{1,253}(?::|$))${DNS_LABEL}(?:\\.${DNS_LABEL})*(?::(?:6553[0-5]|655[0-2]\\d|65[0-4]\\d{2}|6[0-4]\\d{3}|[1-5]\\d{4}|[1-9]\\d{0,3}))?$`)
const ANY_CASE_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
const ADDRESS_DNS = new RegExp(`^(?=.{1,253}$)${ANY_CASE_LABEL}(?:\\.${ANY_CASE_LABEL})*\\.?$`)
/** Inventory host names (keys of `hosts`). */
export const HOST_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
const SSH_USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/
const PG_IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/
export const SYNAPSE_VERSION = /^\d+\.\d+\.\d+(?:rc\d+)?$/
const ELEMENT_VERSION = /^v?\d+\.\d+\.\d+(?:-rc\.?\d+)?$/
const SHA256 = /^[0-9a-fA-F]{64}$/
const APT_WORD = /^[a-z0-9][a-z0-9.+_-]{0,63}$/
const EMAIL = /^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$/
/** Characters never allowed in URLs we pass on (whitespace, quotes, backticks, backslash, angle brackets). */
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

function text(message: string) {
  return z.string({ error: message }).min(1, { error: message })
}

function pattern(regex: RegExp, message: string) {
  return z.string({ error: message }).regex(regex, { error: message })
}

function predicate(check: (value: string) => boolean, message: string) {
  return z.string({ error: message }).refine(check, { error: message })
}

function integer(min: number, max: number, message = `expected an integer between ${min} and ${max}`) {
  return z.number({ error: message }).int({ error: message }).min(min, { error: message }).max(max, { error: message })
}

const PORT_MESSAGE = 'expected an integer between 1 and 65535'
const port = () => integer(1, 65535, PORT_MESSAGE)
const bool = () => z.boolean({ error: 'expected true or false' })

const SECONDS_MESSAGE = 'expected a number of seconds greater than 0 (at most 86400)'
const seconds = () =>
  z.number({ error: SECONDS_MESSAGE }).gt(0, { error: SECONDS_MESSAGE }).max(86_400, { error: SECONDS_MESSAGE })

const DNS_NAME_MESSAGE =
  'expected a DNS name: lowercase letters a-z, digits 0-9 and "-" in dot-separated labels (e.g. matrix.example.org); no spaces, quotes or other characters'
const SERVER_NAME_MESSAGE =
  'expected a DNS name: lowercase letters a-z, digits 0-9 and "-" in dot-separated labels, optionally followed by :port (e.g. example.org or example.org:8448); no spaces, quotes or other characters'
const HOST_NAME_MESSAGE = 'expected a host name made of letters, digits, "-", "_" and "." (starting with a letter or digit, at most 63 characters)'
const ADDRESS_MESSAGE = 'expected an IPv4 address, an IPv6 address or a DNS name (letters, digits, "-" and ".")'
const URL_MESSAGE = 'expected an http:// or https:// URL without spaces, quotes, backticks or "$"'
const CONTROLLER_PATH_MESSAGE = 'expected a path on this machine (relative to the inventory file, or absolute, ~ allowed)'

const dnsName = () => pattern(DNS_NAME, DNS_NAME_MESSAGE).refine(isDnsName, { error: DNS_NAME_MESSAGE })
const url = () => predicate(isHttpUrl, URL_MESSAGE)
/** A file or directory on the controller; resolved relative to the inventory file. */
const controllerPath = () =>
  z.string({ error: CONTROLLER_PATH_MESSAGE }).min(1, { error: CONTROLLER_PATH_MESSAGE }).refine((value) => !/[\u0000\n\r]/.test(value), {
    error: 'expected a path on this machine; newlines and NUL characters are not allowed',
  })
const hostPath = () =>
  z.string({ error: 'expected an absolute path on the host' }).superRefine((value, ctx) => {
    const problem = hostPathProblem(value)
    if (problem) ctx.addIssue({ code: 'custom', message: `expected an absolute path on the host: it ${problem}`, input: value })
  })
/** A reference to another inventory host by name (existence is checked after parsing). */
const hostReference = () => pattern(HOST_NAME, HOST_NAME_MESSAGE)

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
      close ? `unknown key "${key}"; did you mean "${close}"?` : `unknown key "${key}"; a secret reference has one of the keys env, file or generate`,
      SECRET_FORMS,
    )
  }
  if (keys.length !== 1) {
    return withHint(`a secret reference has exactly one key (env, file or generate), got ${keys.length === 0 ? 'none' : keys.join(' and ')}`, SECRET_FORMS)
  }
  const record = input as Record<string, unknown>
  if ('generate' in record) return withHint(`generate must be true, got ${JSON.stringify(record.generate)}`, 'write { generate: true }, or use { env: NAME } or { file: path }')
  if ('env' in record) return 'expected the name of an environment variable (letters, digits and _, not starting with a digit)'
  return 'expected the path of a file on this machine (relative to the inventory file, or absolute)'
}

export const secretRefSchema = z
  .union(
    [
      z.strictObject({ env: pattern(ENV_NAME, 'expected the name of an environment variable (letters, digits and _, not starting with a digit)') }),
      z.strictObject({ file: controllerPath() }),
      z.strictObject({ generate: z.literal(true) }),
    ],
    { error: (issue) => secretRefMessage(issue.input) },
  )
  .describe('A secret: { env: NAME } (environment variable), { file: path } (file on this machine) or { generate: true } (made and kept on the host)')

// ---------------------------------------------------------------------------------------------
// Sections

export const sshSchema = z
  .strictObject({
    user: pattern(SSH_USER, 'expected a user name (letters, digits, "_", "-", "."; at most 32 characters)').optional().describe('Login user (default root)'),
    port: port().optional().describe('SSH port (default 22)'),
    identityFile: controllerPath().optional().describe('Private key on this machine; ssh-agent when unset'),
    knownHostsFile: controllerPath().optional().describe('known_hosts used to verify host keys (default ~/.ssh/known_hosts)'),
    hostKeyPolicy: z
      .enum(['strict', 'accept-new'], { error: 'expected "strict" or "accept-new"' })
      .optional()
      .describe('strict: unknown keys stop the host; accept-new: unknown keys are added (default strict)'),
    jump: z
      .string({ error: 'expected an inventory host name or user@host:port' })
      .refine((value) => HOST_NAME.test(value) || parseJump(value) !== undefined, { error: 'expected an inventory host name or user@host:port' })
      .optional()
      .describe('Jump host: an inventory host name or user@host:port'),
    sudoPassword: secretRefSchema.optional().describe('Password for sudo when the login user needs one'),
    connectTimeout: seconds().optional().describe('Seconds (default 10)'),
    commandTimeout: seconds().optional().describe('Seconds (default 900)'),
    keepaliveInterval: seconds().optional().describe('Seconds (default 15)'),
  })
  .describe('How to reach the host over SSH')

const aptRepositorySchema = z.strictObject({
  url: url().optional(),
  keyringUrl: url().optional(),
  keyringFile: controllerPath().optional(),
  fingerprint: predicate(
    (value) => /^[0-9A-Fa-f]{40}$/.test(value.replace(/\s+/g, '')),
    'expected a 40-digit hexadecimal key fingerprint (spaces allowed)',
  ).optional(),
  suite: pattern(APT_WORD, 'expected an apt suite name (lowercase letters, digits, ".", "+", "_", "-")').optional(),
  components: z
    .array(pattern(APT_WORD, 'expected an apt component name (lowercase letters, digits, ".", "+", "_", "-")'), { error: 'expected a list of apt components, e.g. [main]' })
    .min(1, { error: 'expected at least one apt component, e.g. [main]' })
    .optional(),
})

const postgresSchema = z.strictObject({
  host: hostReference().optional().describe('Inventory host running PostgreSQL (default: the host with the postgres role)'),
  port: port().optional(),
  database: pattern(PG_IDENTIFIER, 'expected a PostgreSQL name (lowercase letters, digits and _, not starting with a digit)').optional(),
  user: pattern(PG_IDENTIFIER, 'expected a PostgreSQL role name (lowercase letters, digits and _, not starting with a digit)').optional(),
  password: secretRefSchema.optional(),
  version: integer(9, 99, 'expected a PostgreSQL major version (an integer such as 14, 15, 16 or 17)')
    .optional()
    .describe('PostgreSQL major version to install (default: the distribution\'s)'),
  allowFrom: z.array(hostReference(), { error: 'expected a list of inventory host names' }).optional(),
})

const redisSchema = z.strictObject({
  host: hostReference().optional().describe('Inventory host running Redis (default: the host with the redis role)'),
  port: port().optional(),
  password: secretRefSchema.optional(),
})

const synapseSchema = z.strictObject({
  install: z.enum(['apt', 'pip'], { error: 'expected "apt" or "pip"' }).optional(),
  version: z
    .string({ error: 'expected a Synapse version in quotes, such as "1.120.0"' })
    .regex(SYNAPSE_VERSION, { error: 'expected a Synapse version x.y.z, such as "1.120.0" (optionally with rcN)' })
    .optional(),
  pipIndexUrl: url().optional(),
  wheelhouse: controllerPath().optional(),
  lockDir: controllerPath()
    .optional()
    .describe('pip: directory of the Synapse lock files <version>.txt (default synapse-lock/ beside the inventory; `provision lock` writes them)'),
  listenPort: port().optional(),
  enableRegistration: bool().optional(),
  reportStats: bool().optional(),
  cacheFactor: z
    .number({ error: 'expected a number greater than 0 (at most 100)' })
    .gt(0, { error: 'expected a number greater than 0 (at most 100)' })
    .max(100, { error: 'expected a number greater than 0 (at most 100)' })
    .optional(),
  federationCaFiles: z.array(controllerPath(), { error: 'expected a list of certificate files on this machine' }).optional(),
  extraConfig: z.record(z.string(), z.unknown(), { error: 'expected a mapping of Synapse configuration keys' }).optional(),
  signingKeyPath: hostPath().optional().describe('The signing key on the host (default /etc/matrix-synapse/homeserver.signing.key; an adopted server keeps its own)'),
  mediaStorePath: hostPath().optional().describe('Media store on the host (default /var/lib/matrix-synapse/media; an adopted server keeps its own)'),
  signingKey: secretRefSchema
    .optional()
    .describe("The server's signing key (the key file's content; env or file, never generate). Needed when workers run on other hosts: each gets this key. Unset: Synapse generates one on the synapse host"),
  macaroonSecret: secretRefSchema.optional(),
  formSecret: secretRefSchema.optional(),
  registrationSharedSecret: secretRefSchema.optional(),
  keepVenvs: integer(2, 20, 'expected how many Synapse venvs to keep, an integer between 2 and 20 (the active one and at least one to roll back to)')
    .optional()
    .describe('pip: versioned venvs /opt/venvs/matrix-synapse-<version> kept after an upgrade, the active one included (default 2)'),
  backupDir: hostPath().optional().describe('Where the database dump before a schema migration goes on the host (default /var/backups/matrix-synapse)'),
})

/** worker_name: a systemd instance name, file name, instance_map key and Prometheus job. */
export const WORKER_NAME = /^[a-z][a-z0-9_]{0,39}$/
const WORKER_NAME_MESSAGE = 'expected a worker name: lowercase letters, digits and "_", starting with a letter (at most 40 characters), e.g. generic_1'

const workerKindSchema = z
  .enum(WORKER_KINDS, { error: `expected a worker kind: ${WORKER_KINDS.join(', ')}` })
  .describe('What the worker does:\n' + WORKER_KINDS.map((k) => `${k}: ${KINDS[k].summary}`).join('\n'))

const workerInstanceSchema = z
  .strictObject({
    name: pattern(WORKER_NAME, WORKER_NAME_MESSAGE).describe('worker_name (unit matrix-synapse-worker@<name>.service)'),
    kind: workerKindSchema,
    port: port().optional().describe('http listener for the requests Apache routes to it (default portBase + position)'),
    replicationPort: port().optional().describe('replication listener of a stream writer (default portBase + 100 + position)'),
    metricsPort: port().optional().describe('metrics listener (default portBase + 200 + position)'),
    host: hostReference()
      .optional()
      .describe("Inventory host that runs it (default: the synapse host); that host needs the workers role"),
  })
  .describe('One worker process')

export type RawWorkerInstance = z.infer<typeof workerInstanceSchema>

const workersSchema = z.strictObject({
  preset: z
    .enum(WORKER_PRESETS, { error: `expected a worker preset: ${WORKER_PRESETS.join(', ')}` })
    .optional()
    .describe('Worker set (default guide; or give instances):\n' + WORKER_PRESETS.map((p) => `${p}: ${PRESETS[p].summary}`).join('\n')),
  instances: z
    .array(workerInstanceSchema, { error: 'expected a list of workers, e.g. [{ name: generic_1, kind: generic }]' })
    .min(1, { error: 'expected at least one worker; drop the workers role for none' })
    .optional()
    .describe('An explicit worker set instead of a preset; append new workers at the end so the others keep their ports'),
  placement: z
    .record(z.string(), hostReference(), { error: 'expected a mapping of worker names or kinds to inventory hosts, e.g. { generic: worker1, media_repository: worker1 }' })
    .optional()
    .describe(
      'Which host runs which workers, by worker name or kind (a name wins over a kind; an instance\'s own host wins over both); the rest run on the synapse host. ' +
        'Each named host needs the workers role; it gets Synapse, the shared configuration and the signing key, and once any worker runs elsewhere ' +
        'the listeners other hosts reach bind to the private addresses, behind our nftables table',
    ),
  portBase: integer(1024, 65235, 'expected an integer between 1024 and 65235 (three blocks of 100 ports from there)').optional().describe('First automatic worker port (default 18100)'),
  replicationPort: port().optional(),
  replicationSecret: secretRefSchema.optional(),
  federationReader: z.strictObject({ port: port().optional(), metricsPort: port().optional() }).optional(),
  federationSender: z.strictObject({ metricsPort: port().optional() }).optional(),
})

const tlsSchema = z.strictObject({
  mode: z.enum(['self-signed', 'files', 'acme'], { error: 'expected "self-signed", "files" or "acme"' }).optional(),
  certificateFile: controllerPath().optional(),
  keyFile: controllerPath().optional(),
  acmeEmail: pattern(EMAIL, 'expected an e-mail address such as admin@example.org').optional(),
  acmeServer: url().optional().describe("ACME directory URL (default Let's Encrypt; e.g. its staging, or a private CA such as step-ca)"),
  acmeCaFile: controllerPath().optional().describe("CA certificate(s) that sign the ACME server's own HTTPS certificate, for a private ACME server"),
})

const apacheSchema = z.strictObject({
  tls: tlsSchema.optional(),
  delegation: z.enum(['well-known', 'port-8448'], { error: 'expected "well-known" or "port-8448"' }).optional(),
  httpsPort: port().optional(),
  maxClients: integer(64, 100_000, 'expected a number of clients between 64 and 100000')
    .optional()
    .describe(
      'Requests Apache holds at once (default 1000). Every connected client keeps a /sync long-poll open and mod_proxy holds one thread for it: size for the clients the server is meant to hold (mpm_event, memory checked before applying)',
    ),
})

const elementSchema = z.strictObject({
  version: z
    .string({ error: 'expected an Element version in quotes, such as "1.11.85"' })
    .regex(ELEMENT_VERSION, { error: 'expected an Element version x.y.z, such as "1.11.85"' })
    .optional(),
  host: dnsName().optional().describe('Element\'s own vhost (default element.<serverName>); never the homeserver\'s'),
  url: url().optional(),
  file: controllerPath().optional(),
  sha256: pattern(SHA256, 'expected a SHA-256 checksum (64 hexadecimal digits)').optional(),
  signatureFile: controllerPath().optional(),
  signatureUrl: url().optional(),
  releaseKeyFile: controllerPath().optional(),
})

const PROM_DURATION = /^[1-9]\d{0,5}(ms|s|m|h|d|w|y)$/
const promDuration = (example: string) => pattern(PROM_DURATION, `expected a Prometheus duration such as "${example}" (a whole number and one of ms, s, m, h, d, w, y)`)

const prometheusSchema = z
  .strictObject({
    enabled: bool().optional().describe('Install Prometheus and the node exporter from the distribution on the Synapse host; it scrapes main and every worker (default false)'),
    port: port().optional().describe('Prometheus listens on 127.0.0.1:<port> (default 9090); reach it with an SSH tunnel'),
    nodeExporterPort: port().optional().describe('The node exporter listens on 127.0.0.1:<port> (default 9100)'),
    retention: promDuration('15d').optional().describe('How long samples are kept (--storage.tsdb.retention.time, default 15d)'),
    retentionSize: pattern(/^[1-9]\d{0,5}(KB|MB|GB|TB)$/, 'expected a size such as "5GB" (a whole number and KB, MB, GB or TB)').optional().describe('Upper bound of the sample store (--storage.tsdb.retention.size); unset: time only'),
    scrapeInterval: promDuration('15s').optional().describe('How often every process is scraped and the alert rules evaluated (default 15s)'),
    processDownFor: promDuration('1m').optional().describe('How long a Synapse process must be unreachable before SynapseProcessDown fires (default 1m)'),
  })
  .describe("Prometheus on the homeserver with alerts for the guide's indicators (process CPU, event send time, cache evictions, a process down)")

const backupSchema = z
  .strictObject({
    directory: hostPath().optional().describe('Where the host keeps its scheduled backups (default /var/backups/matrix-provision)'),
    keep: integer(1, 365, 'expected how many backups to keep: an integer between 1 and 365').optional().describe('Backups kept (default 7)'),
    onCalendar: pattern(/^[A-Za-z0-9 *:.,~/-]{1,64}$/, 'expected a systemd OnCalendar expression such as daily or "*-*-* 03:30:00"')
      .optional()
      .describe('When the timer fires, as systemd.time(7) OnCalendar (default daily)'),
    minFreeMiB: integer(0, 10_000_000, 'expected a number of MiB (an integer >= 0)').optional().describe('Free space that must remain after a backup (default 1024)'),
  })
  .describe('Scheduled backups on the host (role backup)')

const monitoringSchema = z.strictObject({
  enableMetrics: bool().optional(),
  mainMetricsPort: port().optional(),
  prometheusScrapeFile: hostPath().optional(),
  prometheus: prometheusSchema.optional(),
})

export const varsSchema = z
  .strictObject({
    serverName: pattern(SERVER_NAME, SERVER_NAME_MESSAGE).refine(isServerName, { error: SERVER_NAME_MESSAGE }).optional().describe('The part after the colon in user IDs (required, here or per host)'),
    publicHost: dnsName().optional().describe('Host name of the client/federation API (default matrix.<serverName>)'),
    publicBaseUrl: url().optional().describe('Default https://<publicHost>'),
    aptRepository: aptRepositorySchema.optional(),
    postgres: postgresSchema.optional(),
    redis: redisSchema.optional(),
    synapse: synapseSchema.optional(),
    workers: workersSchema.optional(),
    apache: apacheSchema.optional(),
    element: elementSchema.optional(),
    monitoring: monitoringSchema.optional(),
    backup: backupSchema.optional(),
  })
  .describe('Matrix settings; defaults.vars is merged under each host\'s vars (host wins)')

export const roleSchema = z.enum(ROLES, { error: 'unknown role {got}' })

export const hostSchema = z.strictObject({
  address: predicate(isAddress, ADDRESS_MESSAGE).describe('Address for SSH from this machine'),
  privateAddress: predicate(isAddress, ADDRESS_MESSAGE).optional().describe('Address other hosts use (default: address)'),
  ssh: sshSchema.optional(),
  roles: z
    .array(roleSchema, { error: `expected a list of roles (${ROLES.join(', ')})` })
    .min(1, { error: `expected at least one role (${ROLES.join(', ')})` }),
  vars: varsSchema.optional(),
})

export const hostNameSchema = pattern(HOST_NAME, HOST_NAME_MESSAGE)

export const inventorySchema = z
  .strictObject(
    {
      defaults: z
        .strictObject({ ssh: sshSchema.optional(), vars: varsSchema.optional() })
        .optional()
        .describe('Merged under every host (deep merge; the host wins)'),
      hosts: z
        .record(hostNameSchema, hostSchema, { error: 'expected a mapping of host names to hosts' })
        .refine((hosts) => Object.keys(hosts).length > 0, {
          error: withHint('expected at least one host, got {got}', 'add a host: hosts: { matrix1: { address: 203.0.113.10, roles: [synapse] } }'),
        })
        .describe('Host name -> host'),
    },
    { error: withHint('expected a mapping with a "hosts" key, got {got}', 'see inventories/example.yaml') },
  )
  .describe('matrix-provision inventory')

export type RawInventory = z.infer<typeof inventorySchema>
export type RawHost = z.infer<typeof hostSchema>
export type RawVars = z.infer<typeof varsSchema>
export type RawSsh = z.infer<typeof sshSchema>
export type RawSecretRef = z.infer<typeof secretRefSchema>

// ---------------------------------------------------------------------------------------------
// Defaults (applied after merging defaults and host values)

export const SSH_DEFAULTS = {
  user: 'root',
  port: 22,
  knownHostsFile: '~/.ssh/known_hosts',
  hostKeyPolicy: 'strict',
  connectTimeout: 10,
  commandTimeout: 900,
  keepaliveInterval: 15,
} as const

export const APT_REPOSITORY_DEFAULTS = {
  url: 'https://packages.matrix.org/debian/',
  keyringUrl: 'https://packages.matrix.org/debian/matrix-org-archive-keyring.gpg',
  fingerprint: 'AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058',
  components: ['main'],
} as const

export const VARS_DEFAULTS = {
  postgres: { port: 5432, database: 'synapse', user: 'synapse_user' },
  redis: { port: 32992 },
  synapse: { install: 'apt', listenPort: 8008, enableRegistration: false, reportStats: false, cacheFactor: 2, keepVenvs: 2, backupDir: '/var/backups/matrix-synapse' },
  workers: { preset: 'guide', portBase: 18100, replicationPort: 32993, federationReader: { port: 32902, metricsPort: 32981 }, federationSender: { metricsPort: 32980 } },
  apache: { tls: { mode: 'self-signed' }, delegation: 'well-known', httpsPort: 443, maxClients: 1000 },
  monitoring: {
    enableMetrics: true,
    mainMetricsPort: 32982,
    prometheus: { enabled: false, port: 9090, nodeExporterPort: 9100, retention: '15d', scrapeInterval: '15s', processDownFor: '1m' },
  },
  backup: { directory: '/var/backups/matrix-provision', keep: 7, onCalendar: 'daily', minFreeMiB: 1024 },
} as const

/**
 * Secret fields of `vars`, with the stable name a generated value gets on the host
 * (`{ generate: true }` -> `{ kind: 'generate', name }`) and whether it is generated by default.
 */
export const VAR_SECRETS = [
  { path: ['postgres', 'password'], name: 'postgres-password', generateByDefault: true },
  { path: ['redis', 'password'], name: 'redis-password', generateByDefault: false },
  { path: ['synapse', 'signingKey'], name: 'signing-key', generateByDefault: false },
  { path: ['synapse', 'macaroonSecret'], name: 'macaroon-secret', generateByDefault: true },
  { path: ['synapse', 'formSecret'], name: 'form-secret', generateByDefault: true },
  { path: ['synapse', 'registrationSharedSecret'], name: 'registration-shared-secret', generateByDefault: true },
  { path: ['workers', 'replicationSecret'], name: 'replication-secret', generateByDefault: true },
] as const

// ---------------------------------------------------------------------------------------------
// Schema introspection for messages

interface ZodDefLike {
  type?: string
  shape?: Record<string, unknown>
  innerType?: unknown
  valueType?: unknown
  element?: unknown
  in?: unknown
}

function defOf(schema: unknown): ZodDefLike | undefined {
  return (schema as { _zod?: { def?: ZodDefLike } } | undefined)?._zod?.def
}

function unwrap(schema: unknown): unknown {
  let current = schema
  for (let i = 0; i < 10; i++) {
    const def = defOf(current)
    if (!def) return current
    if (def.type === 'optional' || def.type === 'default' || def.type === 'nullable' || def.type === 'prefault' || def.type === 'readonly') current = def.innerType
    else if (def.type === 'pipe') current = def.in
    else return current
  }
  return current
}

/** The keys allowed in the mapping at `path` of the raw inventory (for "did you mean"). */
export function allowedKeysAt(path: readonly PropertyKey[], root: unknown = inventorySchema): string[] {
  let current = unwrap(root)
  for (const segment of path) {
    const def = defOf(current)
    if (!def) return []
    if (def.type === 'object' && def.shape) current = unwrap(def.shape[String(segment)])
    else if (def.type === 'record') current = unwrap(def.valueType)
    else if (def.type === 'array') current = unwrap(def.element)
    else return []
  }
  const def = defOf(current)
  return def?.type === 'object' && def.shape ? Object.keys(def.shape) : []
}
