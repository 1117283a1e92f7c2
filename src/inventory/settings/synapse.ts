/** Settings of Synapse and what it stands on: the apt repository, PostgreSQL and Redis. */
import { z } from 'zod'
import { DEFAULT_LOCK_DIR } from '../../synapse/lock/lock-file.js'
import { MEDIA_STORE_PATH, SIGNING_KEY_PATH } from '../../synapse/paths.js'
import {
  APT_WORD,
  bool,
  controllerPath,
  GENERATE,
  hostPath,
  hostReference,
  integer,
  pattern,
  PG_IDENTIFIER,
  port,
  predicate,
  secretRef,
  SYNAPSE_VERSION,
  url,
} from '../values.js'

/** matrix.org's keyring and its key: the repository's keyring unless keyringUrl or keyringFile is given. */
export const MATRIX_ORG_KEYRING = {
  url: 'https://packages.matrix.org/debian/matrix-org-archive-keyring.gpg',
  fingerprint: 'AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058',
} as const

export const aptRepositorySchema = z.strictObject({
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

export const postgresSchema = z.strictObject({
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

export const redisSchema = z.strictObject({
  host: hostReference().optional().describe('Inventory host running Redis (default: the host with the redis role)'),
  port: port().default(32992),
  password: secretRef('redis-password').optional(),
})

export const synapseSchema = z.strictObject({
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
  keepDumps: integer(
    1,
    50,
    'expected how many pre-upgrade dumps to keep, an integer between 1 and 50 (the newest, which a rollback restores, is always kept)',
  )
    .default(3)
    .describe(
      'Pre-upgrade dumps (synapse-<from>-before-<to>.dump in backupDir) kept after a version change, the newest included; the one the last switch record names is never removed',
    ),
  backupDir: hostPath()
    .default('/var/backups/matrix-synapse')
    .describe('Where the database dump before a schema migration goes on the host'),
})
