/**
 * The one definition of every setting: its type, what is allowed, the message, its default and any
 * transform of its own value. The raw file is checked with it (everything may be left out: values
 * are merged from `defaults` and the host); each host's merged vars are then parsed with the same
 * schema, which fills in the defaults. `MatrixSettings` (types.ts) is its output plus what the loader
 * derives from several fields; the JSON Schema and the README's table of defaults are made from it.
 *
 * This file holds the inventory's shape (hosts, roles, ssh) and `varsSchema`, which puts the sections
 * together; each section of `vars` is written in settings/ by what it configures (synapse.ts: Synapse,
 * apt repository, PostgreSQL, Redis; workers.ts; web.ts: Apache, TLS, Element, MAS; operations.ts:
 * monitoring, Prometheus, backups). A new setting is one entry in its section; a new section is one
 * file there and one line in `varsSchema`.
 *
 * Messages written here say what is allowed; the loader adds what it got (", got "abc"") and the
 * position. A message may hold the placeholder `{got}` to put the value elsewhere, and a hint
 * after `withHint`.
 */
import { z } from 'zod'
import { withHint } from './errors.js'
import { ROLES } from './roles.js'
import { aptRepositorySchema, postgresSchema, redisSchema, synapseSchema } from './settings/synapse.js'
import { workersSchema } from './settings/workers.js'
import { apacheSchema, elementSchema, masSchema } from './settings/web.js'
import { backupSchema, monitoringSchema } from './settings/operations.js'
import {
  ADDRESS_MESSAGE,
  controllerPath,
  dnsName,
  HOST_NAME,
  HOST_NAME_MESSAGE,
  isAddress,
  isServerName,
  parseJump,
  pattern,
  port,
  predicate,
  seconds,
  secretRef,
  SERVER_NAME,
  SERVER_NAME_MESSAGE,
  SSH_USER,
  url,
} from './values.js'

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
