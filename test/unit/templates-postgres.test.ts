import { describe, expect, it } from 'vitest'
import { postgresListenPath, renderPgHba, renderPgHbaRules, renderPostgresListen } from '../../tasks/postgres/templates.js'

const rule = (address: string, extra: Partial<{ database: string; user: string; method: 'scram-sha-256' | 'md5' }> = {}) => ({
  database: 'synapse',
  user: 'synapse_user',
  address,
  method: 'scram-sha-256' as const,
  ...extra,
})

const fields = (block: string) =>
  block
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(/\s+/))

describe('renderPostgresListen', () => {
  it('sets listen_addresses and port for the conf.d drop-in', () => {
    expect(renderPostgresListen(['localhost', '10.0.0.5'], 5432).split('\n')).toEqual(
      expect.arrayContaining(["listen_addresses = 'localhost,10.0.0.5'", 'port = 5432']),
    )
    expect(postgresListenPath(16)).toBe('/etc/postgresql/16/main/conf.d/matrix-provision.conf')
  })

  it('refuses addresses that could break out of the quoted value', () => {
    for (const bad of ["10.0.0.5'", "x'\nssl = off", 'a,b', ''])
      expect(() => renderPostgresListen([bad], 5432), JSON.stringify(bad)).toThrow()
    expect(() => renderPostgresListen(['localhost'], 70000)).toThrow()
    expect(() => postgresListenPath('16/../../x')).toThrow()
  })
})

describe('renderPgHbaRules', () => {
  it('writes one host line per rule, IPs with their host prefix', () => {
    expect(
      fields(renderPgHbaRules([rule('10.0.0.6'), rule('::1'), rule('192.168.0.0/24', { method: 'md5' }), rule('db-client.internal')])),
    ).toEqual([
      ['host', 'synapse', 'synapse_user', '10.0.0.6/32', 'scram-sha-256'],
      ['host', 'synapse', 'synapse_user', '::1/128', 'scram-sha-256'],
      ['host', 'synapse', 'synapse_user', '192.168.0.0/24', 'md5'],
      ['host', 'synapse', 'synapse_user', 'db-client.internal', 'scram-sha-256'],
    ])
  })

  it('is wrapped in markers and drops duplicate lines', () => {
    const block = renderPgHbaRules([rule('10.0.0.6'), rule('10.0.0.6')])
    expect(block.startsWith('# BEGIN matrix-provision\n')).toBe(true)
    expect(block.trimEnd().endsWith('# END matrix-provision')).toBe(true)
    expect(fields(block)).toHaveLength(1)
  })

  it('quotes names pg_hba would read as keywords, groups or lists', () => {
    const [line] = fields(renderPgHbaRules([rule('10.0.0.6', { database: 'all', user: '+admins,x' })]))
    expect(line).toEqual(['host', '"all"', '"+admins,x"', '10.0.0.6/32', 'scram-sha-256'])
  })

  it('refuses what cannot be written safely', () => {
    expect(() => renderPgHbaRules([rule('10.0.0.6 trust')])).toThrow()
    expect(() => renderPgHbaRules([rule('all')])).toThrow()
    expect(() => renderPgHbaRules([rule('samenet')])).toThrow()
    expect(() => renderPgHbaRules([rule('10.0.0.6/33')])).toThrow()
    expect(() => renderPgHbaRules([rule('10.0.0.6', { user: 'a"b' })])).toThrow()
    expect(() => renderPgHbaRules([rule('10.0.0.6', { database: 'x\nhost all all 0.0.0.0/0 trust' })])).toThrow()
    expect(() => renderPgHbaRules([{ ...rule('10.0.0.6'), method: 'trust' as never }])).toThrow()
  })
})

describe('renderPgHba', () => {
  it('puts our rules after the superuser peer line and before the distribution catch-alls', () => {
    const lines = renderPgHba([rule('10.0.0.6')])
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split(/\s+/).join(' '))
    expect(lines[0]).toBe('local all postgres peer')
    expect(lines[1]).toBe('host synapse synapse_user 10.0.0.6/32 scram-sha-256')
    expect(lines.indexOf('host all all 127.0.0.1/32 scram-sha-256')).toBeGreaterThan(1)
    expect(lines).toContain('local all all peer')
  })
})
