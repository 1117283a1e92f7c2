/**
 * The README's table of settings and defaults is made from the schema (scripts/settings-docs.mjs):
 * it may not drift from what the loader fills in.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { isPair, isScalar, parseDocument, visit } from 'yaml'
import { BEGIN, END, renderSettingsTable, withSettingsTable } from '../../scripts/settings-docs.mjs'
import { inventoryJsonSchema } from '../../src/inventory/json-schema.js'
import { leavesOf } from '../../src/inventory/schema-walk.js'
import { varsSchema } from '../../src/inventory/schema.js'
import { settingsFor } from './fixtures/matrix-settings.js'

const README = join(import.meta.dirname, '../../README.md')
const EXAMPLE = join(import.meta.dirname, '../../inventories/example.yaml')

/** The schema's default of the setting at a path of the inventory file, if it has one. */
function schemaDefault(path: string[]): { found: boolean; value?: unknown } {
  let node = inventoryJsonSchema() as { properties?: Record<string, unknown>; default?: unknown }
  for (const key of path) {
    const next = node.properties?.[key] as typeof node | undefined
    if (!next) return { found: false }
    node = next
  }
  // A section's default is {} (its fields have theirs): only settings count.
  if (node.properties) return { found: false }
  return 'default' in node ? { found: true, value: node.default } : { found: false }
}

describe("the README's table of settings", () => {
  it('is what the schema says (after changing a setting: node scripts/settings-docs.mjs --write)', () => {
    const readme = readFileSync(README, 'utf8')
    expect(readme).toContain(BEGIN)
    expect(readme).toContain(END)
    expect(readme).toBe(withSettingsTable(readme, renderSettingsTable(inventoryJsonSchema())))
  })

  it('agrees with the prose: every "`setting` (default X)" in README.md is the schema\'s default', () => {
    const readme = readFileSync(README, 'utf8')
    const rows = new Map(
      [...renderSettingsTable(inventoryJsonSchema()).matchAll(/^\| `([^`]+)` \| `?([^`|]*)`? \|/gm)].map((m) => [m[1]!, m[2]!.trim()]),
    )
    const mentions = [...readme.matchAll(/`([A-Za-z][\w.]*)` \(default ([^)]+)\)/g)].map((m) => ({ setting: m[1]!, said: m[2]! }))
    expect(mentions.length).toBeGreaterThan(0)
    for (const { setting, said } of mentions) {
      const path = [...rows.keys()].find((key) => key === setting || key.endsWith(`.${setting}`))
      expect(path, setting).toBeDefined()
      expect(`${setting}: ${said}`).toBe(`${setting}: ${rows.get(path!)}`)
    }
  })

  it('changes with a default in the schema, so the comparison above can fail', () => {
    const schema = inventoryJsonSchema() as {
      properties: {
        defaults: { properties: { vars: { properties: Record<string, { properties: Record<string, { default?: unknown }> }> } } }
      }
    }
    schema.properties.defaults.properties.vars.properties.postgres!.properties.port!.default = 5433
    const table = renderSettingsTable(schema)
    expect(table).toContain('| `postgres.port` | `5433` |')
    const readme = readFileSync(README, 'utf8')
    expect(withSettingsTable(readme, table)).not.toBe(readme)
  })

  it('lists each default the loader fills in', async () => {
    const vars = await settingsFor({ serverName: 'example.org' }, { roles: ['apt-keyring', 'postgres', 'redis', 'synapse', 'workers'] })
    const table = renderSettingsTable(inventoryJsonSchema())
    expect(table).toContain(`| \`postgres.port\` | \`${vars.postgres.port}\` |`)
    expect(table).toContain(`| \`apache.maxClients\` | \`${vars.apache.maxClients}\` |`)
    expect(table).toContain(`| \`monitoring.prometheus.retention\` | \`${vars.monitoring.prometheus.retention}\` |`)
    expect(table).toContain(`| \`workers.replicationSecret\` | \`{ generate: true }\` |`)
    expect(vars.workers.replicationSecret).toEqual({ kind: 'generate', name: 'replication-secret' })
  })
})

describe('the leaves the loader resolves', () => {
  it('are found in the schema: every controller path and every secret with its generated name', () => {
    const leaves = leavesOf(varsSchema).map((leaf) =>
      leaf.kind === 'secret' ? `${leaf.path.join('.')} secret ${leaf.generatedName ?? '-'}` : `${leaf.path.join('.')} path`,
    )
    expect(leaves).toEqual([
      'aptRepository.keyringFile path',
      'postgres.password secret postgres-password',
      'redis.password secret redis-password',
      'synapse.wheelhouse path',
      'synapse.lockDir path',
      'synapse.federationCaFiles.* path',
      'synapse.signingKey secret signing-key',
      'synapse.macaroonSecret secret macaroon-secret',
      'synapse.formSecret secret form-secret',
      'synapse.registrationSharedSecret secret registration-shared-secret',
      'workers.replicationSecret secret replication-secret',
      'apache.tls.certificateFile path',
      'apache.tls.keyFile path',
      'apache.tls.acmeCaFile path',
      'element.file path',
      'element.signatureFile path',
      'element.releaseKeyFile path',
      'mas.file path',
      'mas.databasePassword secret mas-postgres-password',
      'mas.synapseSecret secret mas-synapse-secret',
      'mas.adminClientSecret secret mas-admin-client-secret',
      'mas.encryptionSecret secret mas-encryption-secret',
    ])
  })

  it('are resolved: paths against the inventory file, secrets read', async () => {
    const vars = await settingsFor(
      {
        serverName: 'example.org',
        synapse: { federationCaFiles: ['ca/one.pem', '/etc/two.pem'], macaroonSecret: { env: 'MACAROON' } },
        element: { version: '1.11.85', file: 'element.tar.gz' },
      },
      { env: { MACAROON: 'macaroon-value' } },
    )
    expect(vars.synapse.federationCaFiles).toEqual(['/nonexistent/ca/one.pem', '/etc/two.pem'])
    expect(vars.synapse.lockDir).toBe('/nonexistent/synapse-lock')
    expect(vars.element.file).toBe('/nonexistent/element.tar.gz')
    const macaroon = vars.synapse.macaroonSecret
    expect(macaroon.kind === 'value' && macaroon.secret.reveal()).toBe('macaroon-value')
  })
})

describe('inventories/example.yaml', () => {
  it("writes the schema's default wherever its comment calls a value the default", () => {
    const doc = parseDocument(readFileSync(EXAMPLE, 'utf8'))
    const checked: string[] = []
    const differ: string[] = []
    visit(doc, {
      Pair(_, pair, ancestors) {
        const value = pair.value as { comment?: string; toJSON?: () => unknown } | null
        if (!isScalar(pair.key) || !value?.comment || !/\bdefault\b/.test(value.comment)) return
        const path = [...ancestors.filter(isPair).map((p) => String((p.key as { value: unknown }).value)), String(pair.key.value)]
        const given = schemaDefault(path)
        if (!given.found) return
        checked.push(path.join('.'))
        const written = isScalar(value) ? value.value : value.toJSON?.()
        if (JSON.stringify(written) !== JSON.stringify(given.value))
          differ.push(`${path.join('.')}: ${JSON.stringify(written)}, the schema's default is ${JSON.stringify(given.value)}`)
      },
    })
    expect(differ).toEqual([])
    expect(checked.length).toBeGreaterThanOrEqual(20)
  })
})
