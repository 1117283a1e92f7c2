import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { restoreBackup } from '../../src/commands/backup/restore.js'
import { createTransferProgress } from '../../src/commands/backup/transfer-progress.js'
import type { ShellCommand } from '../../src/core/shell.js'
import type { RunReport } from '../../src/engine/report-types.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import type { Inventory } from '../../src/inventory/types.js'
import { signingKeyIdentity } from '../../src/resources/homeserver-state.js'
import type { CommandResult, Connection, RunOptions } from '../../src/ssh/connection.js'
import { writeBackupDir } from './fixtures/backup-dir.js'
import { SPREAD_ENV, SPREAD_KEY, spreadInventoryYaml } from './fixtures/spread-inventory.js'
import { OLDER_BACKUP_RESTORE_STEPS } from '../support/restore-steps.js'

const KEY = SPREAD_KEY

/** Every command of every host, in the order they ran, as `host: command` (psql's SQL from stdin). */
type Log = string[]

/** A homeserver host answering the restore's reads: Synapse 1.163.2 installed, a database with data, some media. */
function scriptedHost(name: string, log: Log): Connection {
  const answer = (text: string, sql: string): string => {
    if (text.includes('import synapse')) return '1.163.2 94 92\n'
    // the fact probe of Python's version (sh -s, the script on stdin)
    if (text === 'sh -s' && sql.includes('sys.version_info')) return '@@MP-FACT 0\n3.11\n\n@@MP-END 0 0\n'
    if (sql.includes("current_setting('server_version')")) return '17.2\tt\n'
    if (sql.includes('to_regclass')) return 't\n'
    if (sql.includes('SELECT (SELECT version FROM schema_version)')) return '94\t92\t2\t1\t40\t3\n'
    if (text.includes('du -sb')) return '4096\n'
    if (text.startsWith('cat ') && text.includes('signing.key')) return `${KEY}\n`
    return ''
  }
  return {
    host: name,
    async run(command: ShellCommand, o: RunOptions = {}): Promise<CommandResult> {
      let sql = ''
      if (typeof o.stdin === 'string') sql = o.stdin
      else if (o.stdin && !Buffer.isBuffer(o.stdin)) for await (const _ of o.stdin) void _
      log.push(`${name}: ${command.text.includes('psql') ? `psql ${sql.split('\n')[0]}` : command.text}`)
      return { command: command.text, code: 0, signal: null, stdout: answer(command.text, sql), stderr: '', durationMs: 1, timedOut: false }
    },
    writeFile(f) {
      log.push(`${name}: write ${f.path}`)
      return Promise.resolve()
    },
    async writeFiles() {},
    async putFile() {},
    async putDirectory() {},
    spawn() {
      log.push(`${name}: lock`)
      return {
        write() {},
        end() {},
        waitForOutput: () => Promise.resolve('MP-LOCKED\n'),
        exited: Promise.resolve({ command: 'lock', code: 0, signal: null, stdout: '', stderr: '', durationMs: 1, timedOut: false }),
      }
    },
    async close() {},
  }
}

const spreadInventory = (dir: string): Promise<Inventory> =>
  loadInventoryFromString(spreadInventoryYaml({ databaseHost: true }), join(dir, 'inventory.yaml'), SPREAD_ENV)

/** A backup of example.test signed with the inventory's key (the restore checks it against synapse.signingKey). */
const backupOf = (dir: string, version = '1.163.2') =>
  writeBackupDir({
    in: dir,
    name: `hs-${version}`,
    files: { 'signing.key': `${KEY}\n` },
    edit: (m) => {
      m.serverName = 'example.test'
      m.synapse = { version, schemaVersion: 94, schemaCompatVersion: 92 }
      m.database = { host: 'db', name: 'synapse', postgresVersion: '17.2' }
      m.signingKey = signingKeyIdentity(KEY)
    },
  })

async function harness(version: string) {
  const dir = await mkdtemp(join(tmpdir(), 'mp-restore-spread-'))
  const inventory = await spreadInventory(dir)
  const from = await backupOf(dir, version)
  const host = inventory.hosts.find((h) => h.name === 'hs')!
  const log: Log = []
  const runs: { hosts: string[]; version?: string; tasks?: string[] }[] = []
  const restore = (dryRun: boolean) =>
    restoreBackup({
      host,
      inventory,
      from,
      force: true,
      dryRun,
      connect: (h) => Promise.resolve(scriptedHost(h.name, log)),
      run: (inv, o) => {
        runs.push({
          hosts: inv.hosts.map((h) => h.name),
          version: inv.hosts[0]!.vars.synapse.version,
          ...(o?.tasks ? { tasks: o.tasks.map((t) => t.name) } : {}),
        })
        return Promise.resolve({ mode: 'apply', inventory: inv.file, hosts: [], totals: {}, durationMs: 1 } as unknown as RunReport)
      },
      progress: createTransferProgress({ write: () => undefined, terminal: false, quiet: true }),
    })

  return { restore, log, runs }
}

describe('restore onto a spread homeserver (database on db, workers and the media store on w1)', () => {
  it('plans and does: every host locked, the workers on w1 stopped before main, the database on db, the media on w1, then the inventory on hs and w1', async () => {
    const { restore, log, runs } = await harness('1.163.2')
    const plan = await restore(true)
    expect(plan.status, plan.error).toBe('planned')
    expect(log.filter((l) => / (lock|write|systemctl|tar|pg_restore)/.test(l))).toEqual([])
    expect(plan.replaces[0]).toMatch(
      /^database synapse on db: 2 users, 1 rooms, 40 events, 3 local media, schema 94 \(kept as synapse_replaced_1/,
    )
    expect(plan.replaces[1]).toMatch(/^media store \/var\/lib\/matrix-synapse\/media on w1: /)
    const summary = (a: string) => plan.steps.find((s) => s.action === a)!.summary
    expect(plan.steps.map((s) => s.action)).toEqual(['stop', 'signing-key', 'secrets', 'database', 'media', 'apply'])
    expect(summary('stop')).toMatch(
      /^stop on w1: matrix-synapse-worker@generic\.service, matrix-synapse-worker@media_repository\.service; on hs: matrix-synapse-worker@federation_sender\.service, .*; then matrix-synapse\.service \(the workers first, on every host\)$/,
    )
    expect(summary('database')).toMatch(/^restore synapse on db into synapse_restoring/)
    expect(summary('media')).toMatch(/into \/var\/lib\/matrix-synapse\/\.media-restoring on w1/)
    expect(summary('apply')).toMatch(/^apply the inventory to hs, w1: /)

    log.length = 0
    const done = await restore(false)
    expect(done.status, done.error).toBe('restored')
    expect(done.steps.map((s) => s.summary)).toEqual(plan.steps.map((s) => s.summary))
    expect(log.filter((l) => l.endsWith(': lock')).sort()).toEqual(['db: lock', 'hs: lock', 'w1: lock'])
    const at = (re: RegExp) => log.findIndex((l) => re.test(l))
    const stopW1 = at(/^w1: systemctl stop /)
    const stopMain = at(/^hs: systemctl stop 'matrix-synapse\.service'|^hs: systemctl stop matrix-synapse\.service/)
    expect(stopW1).toBeGreaterThanOrEqual(0)
    expect(stopMain).toBeGreaterThan(stopW1)
    expect(at(/^db: .*pg_restore/)).toBeGreaterThan(stopMain)
    expect(at(/^w1: tar -x -f - -C .*\.media-restoring/)).toBeGreaterThan(stopMain)
    expect(log.filter((l) => /pg_restore/.test(l)).every((l) => l.startsWith('db: '))).toBe(true)
    expect(at(/^hs: write \/etc\/matrix-synapse\/homeserver\.signing\.key/)).toBeGreaterThan(stopMain)
    expect(runs).toEqual([{ hosts: ['hs', 'w1'], version: '1.163.2' }])
  })

  it('an older backup: 1.158.0 installed on hs and w1 while 1.163.2 serves, the data, the inventory pinned at 1.158.0, then the inventory (its upgrade)', async () => {
    const { restore, log, runs } = await harness('1.158.0')
    const plan = await restore(true)
    expect(plan.status, plan.error).toBe('planned')
    expect(plan.route).toEqual({ from: '1.158.0', to: '1.163.2' })
    expect(plan.steps.map((s) => s.action)).toEqual(OLDER_BACKUP_RESTORE_STEPS)
    expect(plan.steps[0]!.summary).toMatch(
      /^install Synapse 1\.158\.0 side by side in \/opt\/venvs\/matrix-synapse-1\.158\.0 on hs, w1 \(from the lock .*1\.158\.0\.txt\) while 1\.163\.2 serves/,
    )
    expect(plan.steps.at(-1)!.details).toEqual([
      'pg_dump -Fc of synapse to /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump and the signing key beside it (the schema changes)',
      expect.stringMatching(
        /^stop matrix-synapse-worker@federation_sender\.service, .*, matrix-synapse-worker@generic\.service on w1, matrix-synapse-worker@media_repository\.service on w1$/,
      ) as string,
      'switch /opt/venvs/matrix-synapse -> /opt/venvs/matrix-synapse-1.163.2',
      'restart matrix-synapse.service on 1.163.2: main alone applies the schema deltas since 94',
      'wait until main answers /health (migrations done)',
      'start the workers on 1.163.2 (the worker hosts switch theirs first)',
      'after-checks of every task',
    ])
    expect(runs).toEqual([])
    log.length = 0
    const done = await restore(false)
    expect(done.status, done.error).toBe('restored')
    expect(runs).toEqual([
      { hosts: ['hs', 'w1'], version: '1.163.2', tasks: ['synapse', 'workers'] },
      { hosts: ['hs', 'w1'], version: '1.158.0' },
      { hosts: ['hs', 'w1'], version: '1.163.2' },
    ])
  })
})
