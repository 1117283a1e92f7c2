/**
 * The one definition of every setting: its type, what is allowed, the message, its default and any
 * transform of its own value. The raw file is checked with it (everything may be left out: values
 * are merged from `defaults` and the host); each host's merged vars are then parsed with the same
 * schema, which fills in the defaults. `MatrixSettings` (types.ts) is its output plus what the loader
 * derives from several fields; the JSON Schema and the README's table of defaults are made from it.
 *
 * Messages written here say what is allowed; the loader adds what it got (", got "abc"") and the
 * position. A message may hold the placeholder `{got}` to put the value elsewhere, and a hint
 * after `withHint`.
 */
import { z } from 'zod'
import { withHint } from './errors.js'
import { ROLES } from './roles.js'
import { DEFAULT_LOCK_DIR } from '../synapse/lock/lock-file.js'
import { MEDIA_STORE_PATH, SIGNING_KEY_PATH } from '../synapse/paths.js'
import { KINDS, WORKER_KINDS } from '../synapse/worker-kinds.js'
import { PRESETS, WORKER_PRESETS } from '../synapse/worker-presets.js'
import {
  ADDRESS_MESSAGE,
  APT_WORD,
  bool,
  controllerPath,
  dnsName,
  ELEMENT_VERSION,
  EMAIL,
  GENERATE,
  HOST_NAME,
  HOST_NAME_MESSAGE,
  hostPath,
  hostReference,
  integer,
  isAddress,
  isServerName,
  parseJump,
  pattern,
  PG_IDENTIFIER,
  port,
  predicate,
  seconds,
  secretRef,
  SERVER_NAME,
  SERVER_NAME_MESSAGE,
  SHA256,
  SSH_USER,
  SYNAPSE_VERSION,
  url,
} from './values.js'

// ---------------------------------------------------------------------------------------------
// Sections

export const sshSchema = z
  .strictObject({
    user: pattern(SSH_USER, 'expected a user name (letters, digits, "_", "-", "."; at most 32 characters)')
      .default('root')
      .describe('Login user'),
    port: port().default(22).describe('SSH port'),
    identityFile: controllerPath().optional().describe('Private key on this machine; ssh-agent when unset'),
    knownHostsFile: controllerPath().default('~/.ssh/known_hosts').describe('known_hosts used to verify host keys'),
    hostKeyPolicy: z
      .enum(['strict', 'accept-new'], { error: 'expected "strict" or "accept-new"' })
      .default('strict')
      .describe('strict: unknown keys stop the host; accept-new: unknown keys are added'),
    jump: z
      .string({ error: 'expected an inventory host name or user@host:port' })
      .refine((value) => HOST_NAME.test(value) || parseJump(value) !== undefined, {
        error: 'expected an inventory host name or user@host:port',
      })
      .optional()
      .describe('Jump host: an inventory host name or user@host:port'),
    sudoPassword: secretRef().optional().describe('Password for sudo when the login user needs one'),
    connectTimeout: seconds().default(10).describe('Seconds'),
    commandTimeout: seconds().default(900).describe('Seconds'),
    keepaliveInterval: seconds().default(15).describe('Seconds'),
  })
  .describe('How to reach the host over SSH')

/** matrix.org's keyring and its key: the repository's keyring unless keyringUrl or keyringFile is given. */
export const MATRIX_ORG_KEYRING = {
  url: 'https://packages.matrix.org/debian/matrix-org-archive-keyring.gpg',
  fingerprint: 'AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058',
} as const

const aptRepositorySchema = z.strictObject({
  url: url().default('https://packages.matrix.org/debian/'),
  keyringUrl: url().optional().describe("URL of the keyring (binary or armored); matrix.org's unless keyringFile is given"),
  keyringFile: controllerPath().optional(),
  fingerprint: predicate(
    (value) => /^[0-9A-Fa-f]{40}$/.test(value.replace(/\s+/g, '')),
    'expected a 40-digit hexadecimal key fingerprint (spaces allowed)',
  )
    .transform((value) => value.replace(/\s+/g, '').toUpperCase())
    .optional()
    .describe("Expected key fingerprint, checked before the keyring is installed; matrix.org's unless keyringUrl or keyringFile is given"),
  suite: pattern(APT_WORD, 'expected an apt suite name (lowercase letters, digits, ".", "+", "_", "-")')
    .optional()
    .describe("Suite; the host's codename when unset"),
  components: z
    .array(pattern(APT_WORD, 'expected an apt component name (lowercase letters, digits, ".", "+", "_", "-")'), {
      error: 'expected a list of apt components, e.g. [main]',
    })
    .min(1, { error: 'expected at least one apt component, e.g. [main]' })
    .default(['main']),
})

const postgresSchema = z.strictObject({
  host: hostReference().optional().describe('Inventory host running PostgreSQL (default: the host with the postgres role)'),
  port: port().default(5432),
  database: pattern(PG_IDENTIFIER, 'expected a PostgreSQL name (lowercase letters, digits and _, not starting with a digit)').default(
    'synapse',
  ),
  user: pattern(PG_IDENTIFIER, 'expected a PostgreSQL role name (lowercase letters, digits and _, not starting with a digit)').default(
    'synapse_user',
  ),
  password: secretRef('postgres-password').default(GENERATE),
  version: integer(9, 99, 'expected a PostgreSQL major version (an integer such as 14, 15, 16 or 17)')
    .optional()
    .describe("PostgreSQL major version to install (default: the distribution's)"),
  allowFrom: z
    .array(hostReference(), { error: 'expected a list of inventory host names' })
    .optional()
    .describe('Inventory hosts allowed to connect (default: every host with the synapse or workers role)'),
})

const redisSchema = z.strictObject({
  host: hostReference().optional().describe('Inventory host running Redis (default: the host with the redis role)'),
  port: port().default(32992),
  password: secretRef('redis-password').optional(),
})

const synapseSchema = z.strictObject({
  install: z.enum(['apt', 'pip'], { error: 'expected "apt" or "pip"' }).default('apt'),
  version: z
    .string({ error: 'expected a Synapse version in quotes, such as "1.120.0"' })
    .regex(SYNAPSE_VERSION, { error: 'expected a Synapse version x.y.z, such as "1.120.0" (optionally with rcN)' })
    .optional(),
  pipIndexUrl: url().optional().describe('pip: the package index to install from (default PyPI)'),
  wheelhouse: controllerPath()
    .optional()
    .describe('pip: a wheelhouse directory on this machine (`provision lock --wheelhouse`), uploaded for hosts without an index'),
  lockDir: controllerPath()
    .default(DEFAULT_LOCK_DIR)
    .describe('pip: directory of the Synapse lock files <version>.txt, relative to the inventory (`provision lock` writes them)'),
  listenPort: port().default(8008),
  enableRegistration: bool().default(false),
  reportStats: bool().default(false),
  cacheFactor: z
    .number({ error: 'expected a number greater than 0 (at most 100)' })
    .gt(0, { error: 'expected a number greater than 0 (at most 100)' })
    .max(100, { error: 'expected a number greater than 0 (at most 100)' })
    .default(2),
  federationCaFiles: z
    .array(controllerPath(), { error: 'expected a list of certificate files on this machine' })
    .default([])
    .describe('Extra CA certificates on this machine trusted for federation (federation_custom_ca_list)'),
  extraConfig: z
    .record(z.string(), z.unknown(), { error: 'expected a mapping of Synapse configuration keys' })
    .default({})
    .describe('Synapse configuration keys added verbatim (conf.d, merged last)'),
  signingKeyPath: hostPath()
    .optional()
    .describe(`The signing key on the host (default ${SIGNING_KEY_PATH}; an adopted server keeps its own)`),
  mediaStorePath: hostPath().optional().describe(`Media store on the host (default ${MEDIA_STORE_PATH}; an adopted server keeps its own)`),
  signingKey: secretRef('signing-key')
    .optional()
    .describe(
      "The server's signing key (the key file's content; env or file, never generate). Needed when workers run on other hosts: each gets this key. Unset: Synapse generates one on the synapse host",
    ),
  macaroonSecret: secretRef('macaroon-secret').default(GENERATE),
  formSecret: secretRef('form-secret').default(GENERATE),
  registrationSharedSecret: secretRef('registration-shared-secret').default(GENERATE),
  keepVenvs: integer(
    2,
    20,
    'expected how many Synapse venvs to keep, an integer between 2 and 20 (the active one and at least one to roll back to)',
  )
    .default(2)
    .describe('pip: versioned venvs /opt/venvs/matrix-synapse-<version> kept after an upgrade, the active one included'),
  backupDir: hostPath()
    .default('/var/backups/matrix-synapse')
    .describe('Where the database dump before a schema migration goes on the host'),
})

/** worker_name: a systemd instance name, file name, instance_map key and Prometheus job. */
export const WORKER_NAME = /^[a-z][a-z0-9_]{0,39}$/
const WORKER_NAME_MESSAGE =
  'expected a worker name: lowercase letters, digits and "_", starting with a letter (at most 40 characters), e.g. generic_1'

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
    host: hostReference().optional().describe('Inventory host that runs it (default: the synapse host); that host needs the workers role'),
  })
  .describe('One worker process')

const workersSchema = z.strictObject({
  preset: z
    .enum(WORKER_PRESETS, { error: `expected a worker preset: ${WORKER_PRESETS.join(', ')}` })
    .default('guide')
    .describe('Worker set (or give instances):\n' + WORKER_PRESETS.map((p) => `${p}: ${PRESETS[p].summary}`).join('\n')),
  instances: z
    .array(workerInstanceSchema, { error: 'expected a list of workers, e.g. [{ name: generic_1, kind: generic }]' })
    .min(1, { error: 'expected at least one worker; drop the workers role for none' })
    .optional()
    .describe('An explicit worker set instead of a preset; append new workers at the end so the others keep their ports'),
  placement: z
    .record(z.string(), hostReference(), {
      error: 'expected a mapping of worker names or kinds to inventory hosts, e.g. { generic: worker1, media_repository: worker1 }',
    })
    .optional()
    .describe(
      "Which host runs which workers, by worker name or kind (a name wins over a kind; an instance's own host wins over both); the rest run on the synapse host. " +
        'Each named host needs the workers role; it gets Synapse, the shared configuration and the signing key, and once any worker runs elsewhere ' +
        'the listeners other hosts reach bind to the private addresses, behind our nftables table',
    ),
  portBase: integer(1024, 65235, 'expected an integer between 1024 and 65235 (three blocks of 100 ports from there)')
    .default(18100)
    .describe('First automatic worker port: http portBase + i, replication + 100 + i, metrics + 200 + i'),
  replicationPort: port().default(32993),
  replicationSecret: secretRef('replication-secret').default(GENERATE),
  federationReader: z
    .strictObject({ port: port().default(32902), metricsPort: port().default(32981) })
    .prefault({})
    .describe("The guide preset's federation_reader"),
  federationSender: z
    .strictObject({ metricsPort: port().default(32980) })
    .prefault({})
    .describe("The guide preset's federation_sender"),
})

const tlsSchema = z.strictObject({
  mode: z
    .enum(['self-signed', 'files', 'acme'], { error: 'expected "self-signed", "files" or "acme"' })
    .default('self-signed')
    .describe('self-signed: made on the host once; files: certificateFile and keyFile uploaded from this machine; acme: certbot'),
  certificateFile: controllerPath().optional(),
  keyFile: controllerPath().optional(),
  acmeEmail: pattern(EMAIL, 'expected an e-mail address such as admin@example.org')
    .optional()
    .describe('The ACME account address (mode acme)'),
  acmeServer: url().optional().describe("ACME directory URL (default Let's Encrypt; e.g. its staging, or a private CA such as step-ca)"),
  acmeCaFile: controllerPath()
    .optional()
    .describe("CA certificate(s) that sign the ACME server's own HTTPS certificate, for a private ACME server"),
})

const apacheSchema = z.strictObject({
  tls: tlsSchema.prefault({}),
  delegation: z
    .enum(['well-known', 'port-8448'], { error: 'expected "well-known" or "port-8448"' })
    .default('well-known')
    .describe("well-known: /.well-known/matrix/* on the server name's vhost; port-8448: a federation vhost on 8448"),
  httpsPort: port().default(443),
  maxClients: integer(64, 100_000, 'expected a number of clients between 64 and 100000')
    .default(1000)
    .describe(
      'Requests Apache holds at once. Every connected client keeps a /sync long-poll open and mod_proxy holds one thread for it: size for the clients the server is meant to hold (mpm_event, memory checked before applying)',
    ),
})

const elementSchema = z.strictObject({
  version: z
    .string({ error: 'expected an Element version in quotes, such as "1.11.85"' })
    .regex(ELEMENT_VERSION, { error: 'expected an Element version x.y.z, such as "1.11.85"' })
    .transform((version) => version.replace(/^v/, ''))
    .optional(),
  host: dnsName().optional().describe("Element's own vhost (default element.<serverName>); never the homeserver's"),
  url: url().optional().describe('Download URL (default: the GitHub release of version)'),
  file: controllerPath().optional().describe('A release tarball on this machine, uploaded to the host'),
  sha256: pattern(SHA256, 'expected a SHA-256 checksum (64 hexadecimal digits)')
    .transform((sum) => sum.toLowerCase())
    .optional(),
  signatureFile: controllerPath().optional().describe('Detached signature of the tarball on this machine'),
  signatureUrl: url().optional().describe('Detached signature of the tarball to download'),
  releaseKeyFile: controllerPath().optional().describe('The release key (on this machine) the signature is checked against'),
})

const masSchema = z
  .strictObject({
    version: z
      .string({ error: 'expected a MAS version in quotes, such as "1.22.0"' })
      .regex(ELEMENT_VERSION, { error: 'expected a MAS version x.y.z, such as "1.22.0"' })
      .transform((version) => version.replace(/^v/, ''))
      .default('1.22.0'),
    host: dnsName().optional().describe("MAS's own vhost (default auth.<serverName>); its issuer is https://<host>/"),
    url: url().optional().describe('Release tarball to download (default: the GitHub release of version, mas-cli-x86_64-linux.tar.gz)'),
    file: controllerPath().optional().describe('The release tarball on this machine, uploaded instead of downloaded'),
    sha256: pattern(SHA256, 'expected a SHA-256 checksum (64 hexadecimal digits)')
      .transform((sum) => sum.toLowerCase())
      .optional()
      .describe('Checksum of the tarball (required: nothing is unpacked unverified)'),
    port: port().default(8080).describe('MAS listens on 127.0.0.1:<port>; Apache proxies to it'),
    healthPort: port().default(8081).describe('Internal listener (/health) on 127.0.0.1'),
    registration: z
      .enum(['closed', 'open', 'token'], { error: 'expected "closed", "open" or "token"' })
      .default('closed')
      .describe('Self-registration through MAS: closed, open, or with registration tokens (mas-cli manage issue-user-registration-token)'),
    loginRateLimit: z
      .strictObject({
        burst: integer(1, 100_000, 'expected a burst of logins (an integer 1-100000)').default(3),
        perSecond: z
          .number({ error: 'expected logins per second (a number > 0)' })
          .positive({ error: 'expected logins per second (a number > 0)' })
          .max(10_000)
          .default(0.05),
      })
      .prefault({})
      .describe('Password logins per client address and per account (MAS default: a burst of 3, then one per 20 s)'),
    databasePassword: secretRef('mas-postgres-password').default(GENERATE),
    synapseSecret: secretRef('mas-synapse-secret')
      .default(GENERATE)
      .describe('Shared by MAS and Synapse (matrix_authentication_service.secret)'),
    encryptionSecret: secretRef('mas-encryption-secret')
      .default(GENERATE)
      .describe("MAS's encryption key is derived from it (64 hex digits): never change it once set"),
  })
  .describe('The Matrix Authentication Service (role mas): Element X logins, OAuth 2.0, registration')

const PROM_DURATION = /^[1-9]\d{0,5}(ms|s|m|h|d|w|y)$/
const promDuration = (example: string) =>
  pattern(PROM_DURATION, `expected a Prometheus duration such as "${example}" (a whole number and one of ms, s, m, h, d, w, y)`)

const prometheusSchema = z
  .strictObject({
    enabled: bool()
      .default(false)
      .describe('Install Prometheus and the node exporter from the distribution on the Synapse host; it scrapes main and every worker'),
    port: port().default(9090).describe('Prometheus listens on 127.0.0.1:<port>; reach it with an SSH tunnel'),
    nodeExporterPort: port().default(9100).describe('The node exporter listens on 127.0.0.1:<port>'),
    retention: promDuration('15d').default('15d').describe('How long samples are kept (--storage.tsdb.retention.time)'),
    retentionSize: pattern(/^[1-9]\d{0,5}(KB|MB|GB|TB)$/, 'expected a size such as "5GB" (a whole number and KB, MB, GB or TB)')
      .optional()
      .describe('Upper bound of the sample store (--storage.tsdb.retention.size); unset: time only'),
    scrapeInterval: promDuration('15s').default('15s').describe('How often every process is scraped and the alert rules evaluated'),
    processDownFor: promDuration('1m')
      .default('1m')
      .describe('How long a Synapse process must be unreachable before SynapseProcessDown fires'),
  })
  .describe(
    "Prometheus on the homeserver with alerts for the guide's indicators (process CPU, event send time, cache evictions, a process down)",
  )

const backupSchema = z
  .strictObject({
    directory: hostPath().default('/var/backups/matrix-provision').describe('Where the host keeps its scheduled backups'),
    keep: integer(1, 365, 'expected how many backups to keep: an integer between 1 and 365').default(7).describe('Backups kept'),
    onCalendar: pattern(/^[A-Za-z0-9 *:.,~/-]{1,64}$/, 'expected a systemd OnCalendar expression such as daily or "*-*-* 03:30:00"')
      .default('daily')
      .describe('When the timer fires, as systemd.time(7) OnCalendar'),
    minFreeMiB: integer(0, 10_000_000, 'expected a number of MiB (an integer >= 0)')
      .default(1024)
      .describe('Free space that must remain after a backup'),
  })
  .describe('Scheduled backups on the host (role backup)')

const monitoringSchema = z.strictObject({
  enableMetrics: bool().default(true),
  mainMetricsPort: port().default(32982),
  prometheusScrapeFile: hostPath().optional().describe('Write a Prometheus scrape configuration here on the host (none when unset)'),
  prometheus: prometheusSchema.prefault({}),
})

export const varsSchema = z
  .strictObject({
    serverName: pattern(SERVER_NAME, SERVER_NAME_MESSAGE)
      .refine(isServerName, { error: SERVER_NAME_MESSAGE })
      .optional()
      .describe('The part after the colon in user IDs (required, here or per host)'),
    publicHost: dnsName().optional().describe('Host name of the client/federation API (default matrix.<serverName>)'),
    publicBaseUrl: url().optional().describe('Default https://<publicHost> (with :<apache.httpsPort> unless 443)'),
    aptRepository: aptRepositorySchema.prefault({}),
    postgres: postgresSchema.prefault({}),
    redis: redisSchema.prefault({}),
    synapse: synapseSchema.prefault({}),
    workers: workersSchema.prefault({}),
    apache: apacheSchema.prefault({}),
    element: elementSchema.prefault({}),
    mas: masSchema.prefault({}),
    monitoring: monitoringSchema.prefault({}),
    backup: backupSchema.prefault({}),
  })
  .describe("Matrix settings; defaults.vars is merged under each host's vars (host wins)")

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
          error: withHint(
            'expected at least one host, got {got}',
            'add a host: hosts: { matrix1: { address: 203.0.113.10, roles: [synapse] } }',
          ),
        })
        .describe('Host name -> host'),
    },
    { error: withHint('expected a mapping with a "hosts" key, got {got}', 'see inventories/example.yaml') },
  )
  .describe('matrix-provision inventory')

/** The file as written (before defaults): what the loader's checks and positions read. */
export type RawInventory = z.input<typeof inventorySchema>
export type RawHost = z.input<typeof hostSchema>
export type RawVars = z.input<typeof varsSchema>
export type RawSsh = z.input<typeof sshSchema>
/** One host's vars with the defaults filled in (secret references and controller paths not yet resolved). */
export type ParsedVars = z.output<typeof varsSchema>
export type ParsedSsh = z.output<typeof sshSchema>
export type WorkerEntry = z.output<typeof workerInstanceSchema>
