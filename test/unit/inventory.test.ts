import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { inspect } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { MASK, Secret } from '../../src/core/secret.js'
import { findTarget, minimumPostgresFor, SUPPORTED_TARGETS } from '../../src/synapse/compat.js'
import { closestMatch, formatIssues, InventoryError, type InventoryIssue, levenshtein } from '../../src/inventory/errors.js'
import { inventoryJsonSchema } from '../../src/inventory/json-schema.js'
import { loadInventory, loadInventoryFromString } from '../../src/inventory/load.js'
import { findUnclosedOpener } from '../../src/inventory/positions.js'
import { allowedKeysAt } from '../../src/inventory/schema-walk.js'
import { hostPathProblem, isAddress, isDnsName, isServerName, parseJump } from '../../src/inventory/values.js'
import { resolveSecretRef } from '../../src/inventory/secrets.js'
import type { SecretValue } from '../../src/core/secret.js'
import { stringContaining } from './fixtures/rendered.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const example = join(root, 'inventories', 'example.yaml')
const scratch = mkdtempSync(join(tmpdir(), 'inventory-test-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const ENV = { HOME: '/home/tester' }

async function issuesOf(source: string, env: NodeJS.ProcessEnv = ENV, file = join(scratch, 'inline.yaml')): Promise<InventoryIssue[]> {
  try {
    await loadInventoryFromString(source, file, env)
  } catch (error) {
    if (error instanceof InventoryError) return error.issues
    throw error
  }
  throw new Error('the inventory was accepted')
}

function revealed(value: SecretValue | undefined): string | undefined {
  return value?.kind === 'value' ? value.secret.reveal() : undefined
}

const MINIMAL = `
defaults:
  vars:
    serverName: example.org
hosts:
  matrix1:
    address: 203.0.113.10
    roles: [apt-keyring, synapse]
`

describe('inventories/example.yaml', () => {
  it('loads without errors and with an empty environment', async () => {
    const inventory = await loadInventory(example, ENV)
    expect(inventory.file).toBe(example)
    expect(inventory.hosts).toHaveLength(1)
    const [host] = inventory.hosts
    expect(host!.name).toBe('matrix1')
    expect(host!.roles).toEqual(['apt-keyring', 'postgres', 'redis', 'synapse', 'workers', 'apache', 'element', 'monitoring'])
    expect(host!.vars.serverName).toBe('example.org')
    expect(host!.vars.workers.enabled).toBe(true)
    expect(host!.vars.element.enabled).toBe(true)
    expect(host!.vars.postgres.host).toBe('matrix1')
    expect(host!.vars.postgres.version).toBeUndefined()
    expect(host!.ssh.identityFile).toBe('/home/tester/.ssh/id_ed25519')
  })

  it('documents every key it sets with a comment', () => {
    const lines = readFileSync(example, 'utf8').split('\n')
    const undocumented = lines.filter((line) => /^\s*[A-Za-z][A-Za-z0-9]*:/.test(line) && !line.includes('#'))
    // Keys whose comment sits on the line above (section headers) are allowed.
    const allowed = new Set([
      'defaults:',
      'hosts:',
      'matrix1:',
      'roles: [apt-keyring, postgres, redis, synapse, workers, apache, element, monitoring]',
      'tls:',
      'postgres:',
      'redis:',
      'synapse:',
      'aptRepository:',
      'ssh:',
      'vars:',
      'apache:',
      'monitoring:',
    ])
    expect(undocumented.map((line) => line.trim()).filter((line) => !allowed.has(line))).toEqual([])
  })

  it('the commented two-host variant loads too', async () => {
    const text = readFileSync(example, 'utf8')
    const variant = text
      .slice(text.indexOf('# defaults:'))
      .split('\n')
      .map((line) => line.replace(/^# ?/, ''))
      .join('\n')
    const inventory = await loadInventoryFromString(variant, example, { ...ENV, SYNAPSE_DB_PASSWORD: 's3cret-db' })
    const matrix1 = inventory.hosts.find((host) => host.name === 'matrix1')!
    expect(matrix1.vars.postgres.host).toBe('db1')
    expect(revealed(matrix1.vars.postgres.password)).toBe('s3cret-db')
    expect(matrix1.vars.redis.host).toBe('matrix1')
  })
})

describe('loading', () => {
  it('fills in the defaults', async () => {
    const inventory = await loadInventoryFromString(MINIMAL, join(scratch, 'minimal.yaml'), ENV)
    const host = inventory.hosts[0]!
    expect(host.privateAddress).toBe('203.0.113.10')
    expect(host.ssh).toEqual({
      user: 'root',
      port: 22,
      identityFile: undefined,
      knownHostsFile: '/home/tester/.ssh/known_hosts',
      hostKeyPolicy: 'strict',
      jump: undefined,
      sudoPassword: undefined,
      connectTimeoutMs: 10_000,
      commandTimeoutMs: 900_000,
      keepaliveIntervalMs: 15_000,
    })
    const vars = host.vars
    expect(vars.publicHost).toBe('matrix.example.org')
    expect(vars.publicBaseUrl).toBe('https://matrix.example.org')
    expect(vars.aptRepository).toMatchObject({
      url: 'https://packages.matrix.org/debian/',
      keyringUrl: 'https://packages.matrix.org/debian/matrix-org-archive-keyring.gpg',
      fingerprint: 'AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058',
      components: ['main'],
    })
    expect(vars.postgres).toMatchObject({ host: 'matrix1', port: 5432, database: 'synapse', user: 'synapse_user', allowFrom: ['matrix1'] })
    expect(vars.postgres.password).toEqual({ kind: 'generate', name: 'postgres-password' })
    expect(vars.redis).toMatchObject({ host: 'matrix1', port: 32992 })
    expect(vars.redis.password).toBeUndefined()
    expect(vars.synapse).toMatchObject({
      install: 'apt',
      listenPort: 8008,
      enableRegistration: false,
      reportStats: false,
      cacheFactor: 2,
      federationCaFiles: [],
      extraConfig: {},
    })
    expect(vars.synapse.macaroonSecret).toEqual({ kind: 'generate', name: 'macaroon-secret' })
    expect(vars.synapse.formSecret).toEqual({ kind: 'generate', name: 'form-secret' })
    expect(vars.synapse.registrationSharedSecret).toEqual({ kind: 'generate', name: 'registration-shared-secret' })
    expect(vars.workers).toEqual({
      enabled: false,
      preset: 'guide',
      homeserverHost: 'matrix1',
      portBase: 18100,
      replicationPort: 32993,
      replicationSecret: { kind: 'generate', name: 'replication-secret' },
      federationReader: { port: 32902, metricsPort: 32981 },
      federationSender: { metricsPort: 32980 },
    })
    expect(vars.apache).toEqual({ tls: { mode: 'self-signed' }, delegation: 'well-known', httpsPort: 443, maxClients: 1000 })
    expect(vars.element).toMatchObject({ enabled: false, host: 'element.example.org' })
    expect(vars.monitoring).toEqual({
      enableMetrics: true,
      mainMetricsPort: 32982,
      prometheus: { enabled: false, port: 9090, nodeExporterPort: 9100, retention: '15d', scrapeInterval: '15s', processDownFor: '1m' },
    })
  })

  it('merges defaults under each host, the host winning, lists and secrets replaced whole', async () => {
    const source = `
defaults:
  ssh: { user: deploy, port: 2222, connectTimeout: 2.5 }
  vars:
    serverName: example.org:8448
    synapse: { listenPort: 8009, federationCaFiles: [./ca/a.pem, ./ca/b.pem], extraConfig: { a: 1, nested: { x: 1 } } }
    postgres: { password: { env: DB_PASSWORD } }
hosts:
  matrix1:
    address: 2001:db8::10
    ssh: { port: 22 }
    roles: [synapse, postgres, apt-keyring]
    vars:
      synapse: { federationCaFiles: [/etc/ca.pem], extraConfig: { nested: { y: 2 } } }
      postgres: { password: { file: ./db.secret } }
`
    const file = join(scratch, 'merge.yaml')
    const env = { ...ENV, DB_PASSWORD: 'from-env' }
    // ./db.secret does not exist yet: the host's { file } replaced the { env } of the defaults.
    const issues = await issuesOf(source, env, file)
    expect(issues).toHaveLength(1)
    expect(issues[0]!.path).toBe('hosts.matrix1.vars.postgres.password')
    expect(issues[0]!.message).toBe(`cannot read secret file ${join(scratch, 'db.secret')}: no such file or directory (ENOENT)`)
    expect(issues[0]!.line).toBe(15)
    expect(issues[0]!.col).toBe(29)

    writeFileSync(join(scratch, 'db.secret'), 'from-file\n', { mode: 0o600 })
    const inventory = await loadInventoryFromString(source, file, env)
    const host = inventory.hosts[0]!
    expect(host.ssh).toMatchObject({ user: 'deploy', port: 22, connectTimeoutMs: 2500 })
    expect(host.address).toBe('2001:db8::10')
    expect(host.roles).toEqual(['apt-keyring', 'postgres', 'synapse'])
    expect(host.vars.serverName).toBe('example.org:8448')
    expect(host.vars.publicHost).toBe('matrix.example.org')
    expect(host.vars.element.host).toBe('element.example.org')
    expect(host.vars.synapse.listenPort).toBe(8009)
    expect(host.vars.synapse.federationCaFiles).toEqual(['/etc/ca.pem'])
    expect(host.vars.synapse.extraConfig).toEqual({ a: 1, nested: { x: 1, y: 2 } })
    expect(revealed(host.vars.postgres.password)).toBe('from-file')
  })

  it('reads secrets from the environment and from files relative to the inventory, and masks them', async () => {
    writeFileSync(join(scratch, 'redis.secret'), 'redis-secret-value\r\n')
    const inventory = await loadInventoryFromString(
      `
defaults:
  ssh:
    sudoPassword: { env: SUDO_PASSWORD }
    identityFile: keys/id_ed25519
  vars:
    serverName: example.org
    redis: { password: { file: redis.secret } }
    synapse: { macaroonSecret: { env: MACAROON } }
hosts:
  matrix1:
    address: matrix1.internal.example.org
    roles: [apt-keyring, postgres, redis, synapse, workers]
`,
      join(scratch, 'secrets.yaml'),
      { ...ENV, SUDO_PASSWORD: 'sudo-secret-value', MACAROON: 'macaroon-secret-value' },
    )
    const host = inventory.hosts[0]!
    expect(host.ssh.identityFile).toBe(join(scratch, 'keys', 'id_ed25519'))
    expect(revealed(host.ssh.sudoPassword)).toBe('sudo-secret-value')
    expect(revealed(host.vars.redis.password)).toBe('redis-secret-value')
    expect(revealed(host.vars.synapse.macaroonSecret)).toBe('macaroon-secret-value')
    const sudo = host.ssh.sudoPassword as { kind: 'value'; secret: Secret }
    expect(sudo.secret.source).toBe('env SUDO_PASSWORD')
    const printed = `${JSON.stringify(inventory)} ${inspect(inventory, { depth: 10 })}`
    expect(printed).not.toContain('sudo-secret-value')
    expect(printed).not.toContain('redis-secret-value')
    expect(printed).not.toContain('macaroon-secret-value')
    expect(printed).toContain(MASK)
  })

  it('derives postgres.host, redis.host and allowFrom from the roles', async () => {
    const inventory = await loadInventoryFromString(
      `
defaults:
  vars:
    serverName: example.org
    postgres: { password: { env: DB_PASSWORD } }
hosts:
  db1:
    address: 10.0.0.20
    roles: [postgres]
  matrix1:
    address: 203.0.113.10
    privateAddress: 10.0.0.10
    roles: [apt-keyring, redis, synapse, workers, apache]
  element1:
    address: 203.0.113.11
    roles: [element]
    vars: { element: { file: ./element-v1.11.85.tar.gz } }
`,
      join(scratch, 'three.yaml'),
      { ...ENV, DB_PASSWORD: 'x' },
    )
    const byName = Object.fromEntries(inventory.hosts.map((host) => [host.name, host]))
    expect(byName.matrix1!.vars.postgres.host).toBe('db1')
    expect(byName.matrix1!.vars.redis.host).toBe('matrix1')
    expect(byName.matrix1!.privateAddress).toBe('10.0.0.10')
    expect(byName.db1!.vars.postgres.allowFrom).toEqual(['matrix1'])
    expect(byName.matrix1!.vars.workers.enabled).toBe(true)
    expect(byName.db1!.vars.workers.enabled).toBe(false)
    expect(byName.element1!.vars.element).toMatchObject({
      enabled: true,
      version: '1.11.85',
      file: join(scratch, 'element-v1.11.85.tar.gz'),
    })
  })

  it('accepts YAML anchors and merge keys', async () => {
    const ok = await loadInventoryFromString(
      `
defaults:
  vars: { serverName: example.org }
hosts:
  matrix1: &base
    address: 203.0.113.10
    roles: [apt-keyring, synapse]
  matrix2:
    <<: *base
    address: 203.0.113.11
`,
      join(scratch, 'anchors.yaml'),
      ENV,
    )
    expect(ok.hosts.map((host) => [host.name, host.address, host.roles])).toEqual([
      ['matrix1', '203.0.113.10', ['apt-keyring', 'synapse']],
      ['matrix2', '203.0.113.11', ['apt-keyring', 'synapse']],
    ])
  })
})

describe('issues', () => {
  it('collects every issue of a file, sorted by position', async () => {
    const issues = await issuesOf(`
defaults:
  ssh: { port: 0 }
  vars:
    serverName: "bad name"
hosts:
  matrix1:
    adress: 203.0.113.10
    roles: [synapse, postgress]
`)
    expect(issues.map((issue) => `${issue.line}:${issue.col} ${issue.path}`)).toEqual([
      '3:16 defaults.ssh.port',
      '5:17 defaults.vars.serverName',
      '8:5 hosts.matrix1.address',
      '8:5 hosts.matrix1.adress',
      '9:22 hosts.matrix1.roles[1]',
    ])
    expect(issues[3]!.message).toBe('unknown key "adress"; did you mean "address"?')
    expect(issues[4]!.message).toBe('unknown role "postgress"; did you mean "postgres"?')
  })

  it('collects semantic issues and secret issues together', async () => {
    const issues = await issuesOf(`
defaults:
  vars:
    serverName: example.org
    postgres: { version: 12, password: { env: NOT_SET } }
hosts:
  matrix1:
    address: 203.0.113.10
    roles: [apt-keyring, postgres, synapse, workers]
`)
    expect(issues.map((issue) => issue.message)).toEqual([
      expect.stringContaining('PostgreSQL 12 is too old'),
      'environment variable NOT_SET is not set',
      expect.stringContaining('the workers role needs Redis'),
    ])
  })

  it('the apt method without the apt-keyring role: at the setting when written, else at the synapse role; with what to do', async () => {
    const [byDefault] = await issuesOf(MINIMAL.replace('[apt-keyring, synapse]', '[synapse]'))
    expect(byDefault).toMatchObject({
      path: 'hosts.matrix1.roles[0]',
      message:
        "synapse.install is apt (the default), but matrix1 has no apt-keyring role: nothing would write the matrix.org repository's keyring and source that the matrix-synapse-py3 package comes from",
      hint: 'add apt-keyring to hosts.matrix1.roles, or set synapse.install: pip',
    })
    const [set] = await issuesOf(MINIMAL.replace('[apt-keyring, synapse]', '[synapse]\n    vars: { synapse: { install: apt } }'))
    expect(set).toMatchObject({ path: 'hosts.matrix1.vars.synapse.install', line: 9 })
    expect(set!.message).toMatch(/^synapse.install is apt, but/)
    const pip = await issuesOf(MINIMAL.replace('[apt-keyring, synapse]', '[synapse]\n    vars: { synapse: { install: pip } }'))
    expect(pip.filter((i) => i.message.includes('apt-keyring'))).toEqual([])
  })

  it('never echoes an inline secret', async () => {
    const issues = await issuesOf(
      MINIMAL.replace('serverName: example.org', 'serverName: example.org\n    postgres: { password: "correct horse battery" }'),
    )
    expect(issues).toHaveLength(1)
    expect(issues[0]!.message).not.toContain('correct horse')
    expect(issues[0]!.hint).toBe('write { env: NAME }, { file: path } or { generate: true }')
  })

  it('reports an empty environment variable as not set', async () => {
    const issues = await issuesOf(
      MINIMAL.replace('serverName: example.org', 'serverName: example.org\n    synapse: { formSecret: { env: EMPTY } }'),
      { ...ENV, EMPTY: '' },
    )
    expect(issues[0]!.message).toBe('environment variable EMPTY is not set (it is empty)')
  })

  it('turns an unreadable inventory file into an InventoryError at 1:1', async () => {
    const missing = join(scratch, 'nope.yaml')
    const error = await loadInventory(missing, ENV).catch((thrown: unknown) => thrown)
    expect(error).toBeInstanceOf(InventoryError)
    const [issue] = (error as InventoryError).issues
    expect(issue).toMatchObject({ file: missing, line: 1, col: 1 })
    expect(issue!.message).toContain(`cannot read the inventory file ${missing}: no such file or directory (ENOENT)`)
  })

  it('formats issues as file:line:col: path: message with an indented hint', () => {
    const text = formatIssues([
      {
        file: 'prod.yaml',
        line: 12,
        col: 5,
        path: 'hosts.matrix1.ssh.port',
        message: 'expected an integer between 1 and 65535, got "abc"',
      },
      {
        file: 'prod.yaml',
        line: 14,
        col: 7,
        path: 'hosts.matrix1.vars.postgres.password',
        message: 'environment variable DB_PASSWORD is not set',
        hint: 'export DB_PASSWORD=...',
      },
      { file: 'prod.yaml', line: 1, col: 1, path: '', message: 'YAML syntax error: ...' },
    ])
    expect(text).toBe(
      [
        'prod.yaml:12:5: hosts.matrix1.ssh.port: expected an integer between 1 and 65535, got "abc"',
        'prod.yaml:14:7: hosts.matrix1.vars.postgres.password: environment variable DB_PASSWORD is not set',
        '  hint: export DB_PASSWORD=...',
        'prod.yaml:1:1: YAML syntax error: ...',
      ].join('\n'),
    )
  })

  it('InventoryError carries the sorted, de-duplicated issues and prints them as its message', () => {
    const issue = { file: 'a.yaml', line: 3, col: 1, path: 'x', message: 'bad' }
    const error = new InventoryError([issue, { ...issue, line: 2 }, issue])
    expect(error.issues.map((i) => i.line)).toEqual([2, 3])
    expect(error.message).toBe('a.yaml:2:1: x: bad\na.yaml:3:1: x: bad')
    expect(error.name).toBe('InventoryError')
  })
})

describe('helpers', () => {
  it('levenshtein and closestMatch', () => {
    expect(levenshtein('adress', 'address')).toBe(1)
    expect(levenshtein('prot', 'port')).toBe(1)
    expect(closestMatch('adress', ['address', 'roles'])).toBe('address')
    expect(closestMatch('identity', ['identityFile', 'user'])).toBe('identityFile')
    expect(closestMatch('zzz', ['address', 'roles'])).toBeUndefined()
  })

  it('names, addresses, paths and jump specs', () => {
    expect(isDnsName('matrix.example.org')).toBe(true)
    expect(isDnsName('Matrix.example.org')).toBe(false)
    expect(isDnsName('a;b.example.org')).toBe(false)
    expect(isDnsName('-a.example.org')).toBe(false)
    expect(isServerName('example.org:8448')).toBe(true)
    expect(isServerName('example.org:70000')).toBe(false)
    expect(isServerName('example.org:')).toBe(false)
    expect(isAddress('203.0.113.10')).toBe(true)
    expect(isAddress('2001:db8::1')).toBe(true)
    expect(isAddress('Matrix1.Example.org')).toBe(true)
    expect(isAddress('203.0.113.256')).toBe(false)
    expect(isAddress('host name')).toBe(false)
    expect(hostPathProblem('/etc/prometheus/synapse.yml')).toBeUndefined()
    expect(hostPathProblem('etc/x')).toContain('absolute')
    expect(hostPathProblem('/etc/../x')).toContain('..')
    expect(hostPathProblem('/etc/$(id)')).toContain('may only contain')
    expect(parseJump('admin@bastion.example.org:2222')).toEqual({ user: 'admin', host: 'bastion.example.org', port: 2222 })
    expect(parseJump('[2001:db8::1]:22')).toEqual({ host: '2001:db8::1', port: 22 })
    expect(parseJump('bastion;id')).toBeUndefined()
  })

  it('finds the opening quote or bracket of an unclosed one', () => {
    const source = 'a: [1, 2\nb: "x # y\nc: 1\n'
    expect(findUnclosedOpener(source, source.length)).toEqual({ offset: 12, char: '"' })
    expect(findUnclosedOpener('a: [1, {b: 2}\nc: 1\n', 18)).toEqual({ offset: 3, char: '[' })
    expect(findUnclosedOpener("a: it's fine # don't\nb: [1]\n", 28)).toBeUndefined()
  })

  it('lists the allowed keys of any mapping of the format', () => {
    expect(allowedKeysAt([])).toEqual(['defaults', 'hosts'])
    expect(allowedKeysAt(['hosts', 'anything'])).toEqual(['address', 'privateAddress', 'ssh', 'roles', 'vars'])
    expect(allowedKeysAt(['defaults', 'vars', 'apache', 'tls'])).toEqual([
      'mode',
      'certificateFile',
      'keyFile',
      'acmeEmail',
      'acmeServer',
      'acmeCaFile',
    ])
  })

  it('resolveSecretRef names generated secrets and refuses to generate without a name', async () => {
    const context = { baseDir: scratch, env: {} }
    expect(await resolveSecretRef({ generate: true }, 'redis-password', context)).toEqual({
      ok: true,
      value: { kind: 'generate', name: 'redis-password' },
    })
    expect(await resolveSecretRef({ generate: true }, undefined, context)).toMatchObject({ ok: false })
  })
})

describe('compatibility', () => {
  it('knows the PostgreSQL minimum of each Synapse release', () => {
    expect(minimumPostgresFor(undefined)).toBe(14)
    expect(minimumPostgresFor('1.143.0')).toBe(14)
    expect(minimumPostgresFor('1.157.1')).toBe(14)
    expect(minimumPostgresFor('1.143.0rc1')).toBe(14)
    expect(minimumPostgresFor('1.142.1')).toBe(13)
    expect(minimumPostgresFor('1.122.0')).toBe(13)
    expect(minimumPostgresFor('1.121.1')).toBe(11)
    expect(minimumPostgresFor('1.118.0')).toBe(11)
  })

  it('lists the supported targets with their PostgreSQL and Python', () => {
    expect(SUPPORTED_TARGETS.map((t) => [t.codename, t.defaultPostgres, t.python])).toEqual([
      ['focal', 12, '3.8'],
      ['jammy', 14, '3.10'],
      ['noble', 16, '3.12'],
      ['bookworm', 15, '3.11'],
      ['trixie', 17, '3.13'],
    ])
    expect(findTarget('ubuntu', '20.04')).toMatchObject({
      lastSynapsePackage: '1.118',
      warning: stringContaining('standard support'),
    })
    expect(findTarget('debian', 'trixie')?.version).toBe('13')
    expect(findTarget('debian', '11')).toBeUndefined()
  })
})

describe('JSON Schema', () => {
  it('describes the raw format for editors', () => {
    const schema = inventoryJsonSchema() as {
      type: string
      required: string[]
      additionalProperties: boolean
      properties: Record<string, { additionalProperties?: { properties: Record<string, { items?: { enum?: string[] } }> } }>
    }
    expect(schema.type).toBe('object')
    expect(schema.required).toEqual(['hosts'])
    expect(schema.additionalProperties).toBe(false)
    const host = schema.properties.hosts!.additionalProperties!
    expect(Object.keys(host.properties)).toEqual(['address', 'privateAddress', 'ssh', 'roles', 'vars'])
    expect(host.properties.roles!.items!.enum).toContain('workers')
    expect(JSON.stringify(schema)).toContain('"generate"')
  })
})
