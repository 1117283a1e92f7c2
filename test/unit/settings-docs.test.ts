/**
 * The README's table of settings and defaults is made from the schema (scripts/settings-docs.mjs):
 * it may not drift from what the loader fills in.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { BEGIN, END, renderSettingsTable, withSettingsTable } from '../../scripts/settings-docs.mjs'
import { inventoryJsonSchema } from '../../src/inventory/json-schema.js'
import { leavesOf } from '../../src/inventory/schema-walk.js'
import { varsSchema } from '../../src/inventory/schema.js'
import { settingsFor } from './fixtures/matrix-settings.js'

const README = join(import.meta.dirname, '../../README.md')

describe("the README's table of settings", () => {
  it('is what the schema says (after changing a setting: node scripts/settings-docs.mjs --write)', () => {
    const readme = readFileSync(README, 'utf8')
    expect(readme).toContain(BEGIN)
    expect(readme).toContain(END)
    expect(readme).toBe(withSettingsTable(readme, renderSettingsTable(inventoryJsonSchema())))
  })

  it('changes with a default in the schema, so the comparison above can fail', () => {
    const schema = inventoryJsonSchema() as { properties: { defaults: { properties: { vars: { properties: Record<string, { properties: Record<string, { default?: unknown }> }> } } } } }
    schema.properties.defaults.properties.vars.properties.postgres!.properties.port!.default = 5433
    const table = renderSettingsTable(schema)
    expect(table).toContain('| `postgres.port` | `5433` |')
    const readme = readFileSync(README, 'utf8')
    expect(withSettingsTable(readme, table)).not.toBe(readme)
  })

  it('lists each default the loader fills in', async () => {
    const vars = await settingsFor({ serverName: 'example.org' }, { roles: ['postgres', 'redis', 'synapse', 'workers'] })
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
    const leaves = leavesOf(varsSchema).map((leaf) => (leaf.kind === 'secret' ? `${leaf.path.join('.')} secret ${leaf.generatedName ?? '-'}` : `${leaf.path.join('.')} path`))
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
    ])
  })

  it('are resolved: paths against the inventory file, secrets read', async () => {
    const vars = await settingsFor(
      { serverName: 'example.org', synapse: { federationCaFiles: ['ca/one.pem', '/etc/two.pem'], macaroonSecret: { env: 'MACAROON' } }, element: { version: '1.11.85', file: 'element.tar.gz' } },
      { env: { MACAROON: 'macaroon-value' } },
    )
    expect(vars.synapse.federationCaFiles).toEqual(['/nonexistent/ca/one.pem', '/etc/two.pem'])
    expect(vars.synapse.lockDir).toBe('/nonexistent/synapse-lock')
    expect(vars.element.file).toBe('/nonexistent/element.tar.gz')
    const macaroon = vars.synapse.macaroonSecret
    expect(macaroon.kind === 'value' && macaroon.secret.reveal()).toBe('macaroon-value')
  })
})
