/**
 * `provision adopt` and the accidental-takeover guard, without a host: the reading of a hand-built
 * server (analyzeHandBuilt), its refusals, and runHost on the in-memory host (refused runs change
 * nothing). The real guide-built server is adopted in test/e2e/adopt.test.ts.
 */
import { describe, expect, it } from 'vitest'
import { analyzeHandBuilt } from '../../src/commands/adopt/analyze.js'
import { adoptionHook } from '../../src/commands/adopt/hook.js'
import { withAdoptedSettings } from '../../src/engine/adopted-settings.js'
import { MASK, maskSecrets } from '../../src/core/secret.js'
import type { HandBuiltFiles } from '../../src/commands/adopt/host-files.js'
import { runHost } from '../../src/engine/host-run.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import { loadTasks } from '../../tasks/index.js'
import { FakeHost } from './fake-host.js'
import { DEBIAN_12 } from './fixtures/hosts/distros.js'
import { HOST_RECORD, SECRETS_DIR } from '../../src/synapse/paths.js'

const TASKS = await loadTasks()

const ROLES = '[apt-keyring, postgres, redis, synapse, workers, apache]'
const load = (vars = '', env: NodeJS.ProcessEnv = {}) =>
  loadInventoryFromString(
    `defaults:\n  vars: { serverName: guide.test, publicHost: matrix.guide.test${vars} }\nhosts:\n  guide: { address: 203.0.113.20, roles: ${ROLES} }\n`,
    '/tmp/guide.yaml',
    env,
  )

/** homeserver.yaml as --generate-config writes it, edited as the guide says (secrets in it). */
function guideHomeserver(over: { serverName?: string; database?: string; extra?: string } = {}): string {
  return `server_name: "${over.serverName ?? 'guide.test'}"
pid_file: /var/lib/matrix-synapse/homeserver.pid
listeners:
  - port: 32993
    bind_address: '127.0.0.1'
    type: http
    resources:
      - names: [replication]
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    bind_addresses: ['::1', '127.0.0.1']
    resources:
      - names: [client, federation]
        compress: false
${
  over.database ??
  `database:
    name: psycopg2
    args:
        user: synapse_user
        password: guide-db-password
        database: synapse
        host: localhost
        cp_min: 5
        cp_max: 10`
}
log_config: "/etc/matrix-synapse/guide.test.log.config"
media_store_path: /var/lib/matrix-synapse/media_store
registration_shared_secret: "reg-secret-of-the-guide"
report_stats: false
macaroon_secret_key: "macaroon-of-the-guide"
form_secret: "form-of-the-guide"
signing_key_path: "/etc/matrix-synapse/guide.test.signing.key"
trusted_key_servers:
  - server_name: "matrix.org"
redis:
  enabled: true
  port: 32992
worker_app: synapse.app.homeserver
daemonize: true
send_federation: false
${over.extra ?? ''}`
}

const READER =
  'worker_app: synapse.app.generic_worker\nworker_name: federation_reader\nworker_replication_host: 127.0.0.1\nworker_replication_http_port: 32993\nworker_listeners:\n- type: http\n  port: 32902\n  resources:\n  - names: [client, federation]\n- type: metrics\n  port: 32981\n'
const SENDER =
  'worker_app: synapse.app.federation_sender\nworker_replication_host: 127.0.0.1\nworker_replication_http_port: 32993\nworker_listeners:\n- type: metrics\n  port: 32980\n'

function found(homeserver = guideHomeserver()): HandBuiltFiles {
  return {
    files: new Map([
      ['/etc/matrix-synapse/homeserver.yaml', homeserver],
      ['/etc/matrix-synapse/workers/federation_reader.yaml', READER],
      ['/etc/matrix-synapse/workers/federation_sender.yaml', SENDER],
      [
        '/etc/apache2/sites-available/matrix.guide.test.conf',
        '<VirtualHost *:443>\n  ServerName matrix.guide.test\n  ProxyPass "/_matrix/federation/v1/get_groups_publicised" "http://127.0.0.1:32902/_matrix/federation/v1/get_groups_publicised" nocanon\n  ProxyPass "/_matrix/federation/v1/send/" "http://127.0.0.1:32902/_matrix/federation/v1/send/" nocanon\n</VirtualHost>\n',
      ],
      ['/etc/apache2/sites-available/other.conf', '<VirtualHost *:443>\n  ServerName blog.example.org\n</VirtualHost>\n'],
      ['/etc/systemd/system/matrix-synapse.service.d/daemonize.conf', '[Service]\nType=forking\n'],
    ]),
    enabledSites: new Map([
      ['/etc/apache2/sites-enabled/matrix.guide.test.conf', '/etc/apache2/sites-available/matrix.guide.test.conf'],
      ['/etc/apache2/sites-enabled/other.conf', '/etc/apache2/sites-available/other.conf'],
    ]),
    signingKeys: ['/etc/matrix-synapse/guide.test.signing.key'],
    unitDropIns: ['/etc/systemd/system/matrix-synapse.service.d/daemonize.conf'],
    sqliteFiles: [],
  }
}

describe('reading a server built by the guide (analyzeHandBuilt)', () => {
  it("a package-built server: the macaroon key Synapse used is kept (registration_shared_secret when macaroon_secret_key is unset), a missing one is said to change, the package's unused SQLite file is named and left", async () => {
    const inv = await load()
    const without = (...keys: string[]) =>
      guideHomeserver()
        .split('\n')
        .filter((l) => !keys.some((k) => l.startsWith(`${k}:`)))
        .join('\n')
    const withShared = analyzeHandBuilt(found(without('macaroon_secret_key')), inv.hosts[0]!, inv.file)
    expect(withShared.secrets.find((s) => s.name === 'macaroon-secret')).toMatchObject({
      value: 'reg-secret-of-the-guide',
      from: "homeserver.yaml: registration_shared_secret (Synapse's macaroon key, no macaroon_secret_key is set)",
    })
    const bare = {
      ...found(without('macaroon_secret_key', 'form_secret', 'registration_shared_secret')),
      sqliteFiles: [{ path: '/var/lib/matrix-synapse/homeserver.db', bytes: 2_101_248 }],
    }
    const a = analyzeHandBuilt(bare, inv.hosts[0]!, inv.file)
    expect(a.refusals).toEqual([])
    expect(a.secrets.map((s) => s.name)).toEqual(['postgres-password'])
    expect(a.notes.filter((n) => n.kind === 'changes').map((n) => n.found)).toEqual(
      expect.arrayContaining([
        'no macaroon_secret_key (Synapse derives one from the signing key)',
        'no form_secret',
        'no registration_shared_secret',
      ]),
    )
    expect(a.notes.find((n) => n.found.startsWith('/var/lib/matrix-synapse/homeserver.db'))).toMatchObject({
      kind: 'kept',
      found: '/var/lib/matrix-synapse/homeserver.db (SQLite, 2052 KiB)',
    })
  })

  it('keeps identity and database, takes over the four secrets, keeps unknown settings verbatim, retires the old vhost and drop-in', async () => {
    const inv = await load()
    const a = analyzeHandBuilt(
      found(guideHomeserver({ extra: 'max_upload_size: 100M\nurl_preview_enabled: false\n' })),
      inv.hosts[0]!,
      inv.file,
    )
    expect(a.refusals).toEqual([])
    expect(a.secrets.map((s) => [s.name, s.value])).toEqual([
      ['postgres-password', 'guide-db-password'],
      ['macaroon-secret', 'macaroon-of-the-guide'],
      ['form-secret', 'form-of-the-guide'],
      ['registration-shared-secret', 'reg-secret-of-the-guide'],
    ])
    expect(a.adopted).toEqual({
      signingKeyPath: '/etc/matrix-synapse/guide.test.signing.key',
      mediaStorePath: '/var/lib/matrix-synapse/media_store',
      extraConfig: { max_upload_size: '100M', url_preview_enabled: false },
    })
    const kinds = (k: string) => a.notes.filter((n) => n.kind === k).map((n) => n.found)
    expect(kinds('replaced')).toEqual(
      expect.arrayContaining([
        'homeserver.yaml: daemonize: true',
        'homeserver.yaml: send_federation: false',
        'workers/federation_reader.yaml: worker_replication_host/_http_port',
      ]),
    )
    expect(kinds('extraConfig')).toEqual(['homeserver.yaml: max_upload_size', 'homeserver.yaml: url_preview_enabled'])
    // The ::1 binding is reported as it goes; the blog's vhost is not ours to touch.
    expect(a.notes.find((n) => n.found.includes('listeners[8008'))?.becomes).toBe(
      'synapse.listenPort 8008 (bound to ::1, 127.0.0.1 -> 127.0.0.1)',
    )
    expect(a.retire).toEqual([
      '/etc/apache2/sites-enabled/matrix.guide.test.conf',
      '/etc/systemd/system/matrix-synapse.service.d/daemonize.conf',
    ])
    expect(a.notes.find((n) => n.kind === 'retired' && n.found.includes('matrix.guide.test.conf'))?.becomes).toContain(
      'no longer routed to it: /_matrix/federation/v1/get_groups_publicised',
    )
    expect(a.backup).toContain('/etc/matrix-synapse/homeserver.yaml')
  })

  it('kept settings under secret-looking keys are masked in every report once adopted', async () => {
    const inv = await load()
    const a = analyzeHandBuilt(
      found(guideHomeserver({ extra: 'email:\n  smtp_host: mail.guide.test\n  smtp_pass: "smtp-pass-of-the-guide"\n' })),
      inv.hosts[0]!,
      inv.file,
    )
    expect(a.adopted.extraConfig).toEqual({ email: { smtp_host: 'mail.guide.test', smtp_pass: 'smtp-pass-of-the-guide' } })
    withAdoptedSettings(inv.hosts[0]!, a.adopted)
    expect(maskSecrets(JSON.stringify(a.adopted))).toBe(
      JSON.stringify({ ...a.adopted, extraConfig: { email: { smtp_host: 'mail.guide.test', smtp_pass: MASK } } }),
    )
  })

  it('refuses SQLite: nothing to take over until the database is ported', async () => {
    const inv = await load()
    const a = analyzeHandBuilt(
      found(guideHomeserver({ database: 'database:\n  name: sqlite3\n  args:\n    database: /var/lib/matrix-synapse/homeserver.db' })),
      inv.hosts[0]!,
      inv.file,
    )
    expect(a.refusals).toEqual([
      expect.stringMatching(/^the server uses SQLite \(\/var\/lib\/matrix-synapse\/homeserver\.db\): .*synapse_port_db/),
    ])
  })

  it("refuses a server_name other than the inventory's, naming both and what to set", async () => {
    const inv = await load()
    const a = analyzeHandBuilt(found(guideHomeserver({ serverName: 'example.org' })), inv.hosts[0]!, inv.file)
    expect(a.refusals).toEqual([
      'the host\'s server_name is "example.org" but the inventory\'s serverName is "guide.test": user IDs and the federation identity hang on it and can never change. Set serverName: example.org for this host in /tmp/guide.yaml',
    ])
  })

  it("refuses an inventory secret that differs from the server's, a missing signing key, and another database name", async () => {
    const inv = await load(', synapse: { install: apt, macaroonSecret: { env: MAC } }, postgres: { database: matrix }', {
      MAC: 'another-macaroon',
    })
    const files = found()
    files.signingKeys = []
    const a = analyzeHandBuilt(files, inv.hosts[0]!, inv.file)
    expect(a.refusals).toEqual([
      'the signing key /etc/matrix-synapse/guide.test.signing.key named by signing_key_path does not exist on the host (found: none)',
      'the server\'s database is "synapse" but postgres.database is "matrix": set postgres.database: synapse in /tmp/guide.yaml (the data stays where it is)',
      "the inventory gives macaroon-secret (env MAC) but the server has another in homeserver.yaml: macaroon_secret_key: every access token would stop working. Use { generate: true } (the host's value is kept) or give the same value",
    ])
  })
})

/** The in-memory host with the guide's files (and whatever else a test adds). */
function guideFakeHost(homeserver = guideHomeserver()): FakeHost {
  const host = new FakeHost(DEBIAN_12, 'guide')
  host.addUser('matrix-synapse', 'matrix-synapse', { ownGroup: true })
  const put = (path: string, content: string, meta = {}) => {
    host.mkdirp(path.slice(0, path.lastIndexOf('/')))
    host.put(path, content, meta)
  }
  for (const [path, content] of found(homeserver).files) put(path, content)
  put('/etc/matrix-synapse/guide.test.signing.key', 'ed25519 a_AAAA secretkeybytes\n', { owner: 'matrix-synapse', mode: 0o644 })
  return host
}

describe('runHost on the in-memory host: refusals change nothing', () => {
  it('adopt refuses a SQLite server, in the dry run and in apply, before any write', async () => {
    const inv = await load(', synapse: { install: apt }')
    for (const mode of ['dry-run', 'apply'] as const) {
      const host = guideFakeHost(
        guideHomeserver({ database: 'database:\n  name: sqlite3\n  args:\n    database: /var/lib/matrix-synapse/homeserver.db' }),
      )
      const report = await runHost(inv.hosts[0]!, host, { mode, tasks: TASKS, inventory: inv, adoption: adoptionHook })
      expect(host.unexpected).toEqual([])
      expect(report.status).toBe('failed')
      expect(report.error).toMatch(/^cannot adopt this host:\n- the server uses SQLite/)
      expect(report.tasks).toEqual([])
      expect(host.writeBatches).toEqual([])
      expect(host.file(HOST_RECORD)).toBeUndefined()
    }
  })

  it('a plain run on a hand-built server stops at the before-check naming what it found; nothing is written', async () => {
    const inv = await load(', synapse: { install: apt }')
    for (const mode of ['dry-run', 'apply'] as const) {
      const host = guideFakeHost()
      const report = await runHost(inv.hosts[0]!, host, { mode, tasks: TASKS, inventory: inv })
      expect(host.unexpected).toEqual([])
      expect(report.status).toBe('failed')
      expect(report.error).toBe(
        'apt-keyring: this host already runs a Synapse that matrix-provision did not set up (found: config /etc/matrix-synapse/homeserver.yaml, signing key /etc/matrix-synapse/guide.test.signing.key). ' +
          'A plain run would replace its secrets, signing key and media path. Take it over with `provision adopt --inventory /tmp/guide.yaml --limit guide --dry-run`, read the plan, then run it without --dry-run.',
      )
      expect(host.writeBatches).toEqual([])
      expect(host.file(HOST_RECORD)).toBeUndefined()
    }
  })

  it('the guard leaves alone a host the tool set up: with its host record, or with the secret store of earlier versions', async () => {
    const inv = await load(', synapse: { install: apt }')
    const withRecord = guideFakeHost()
    withRecord.mkdirp('/var/lib/matrix-provision')
    withRecord.put(HOST_RECORD, '{"managedBy":"matrix-provision","origin":"provisioned","since":"2026-11-30"}\n', { mode: 0o600 })
    const olderVersion = guideFakeHost()
    olderVersion.mkdirp(SECRETS_DIR, { mode: 0o700 })
    for (const host of [withRecord, olderVersion]) {
      const report = await runHost(inv.hosts[0]!, host, { mode: 'dry-run', tasks: TASKS, inventory: inv })
      expect(host.unexpected).toEqual([])
      expect(report.error ?? '').not.toContain('did not set up')
      expect(report.tasks.flatMap((t) => t.checks).find((c) => c.name === 'no Synapse set up by hand on this host')).toBeUndefined()
    }
  })
})
