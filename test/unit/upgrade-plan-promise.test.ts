/**
 * The plan is a promise: apply runs exactly the steps the dry run printed, in that order, for every
 * kind of release change (upgrade, rebuild of a drifted venv, apt upgrade) and for a rollback, through
 * the one executor. A host that answers every command as a healthy one does.
 */
import { describe as suite, expect, it } from 'vitest'
import { Prediction, type Change, type PerformedStep, type Step } from '../../src/resources/resource.js'
import { checked, type Connection, type RunOptions } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import { aptSourceFact, parseAptSource } from '../../tasks/synapse/apt-package.js'
import { synapseRelease } from '../../tasks/synapse/release.js'
import { describe, releasePlanOf } from '../../tasks/synapse/release/steps.js'
import { rollBackTo } from '../../tasks/synapse/rollback.js'
import { codeSchemaCommand, databaseSchemaCommand, knownUpdatesCommand } from '../../tasks/synapse/schema-probe.js'
import { StepRunner } from '../../tasks/synapse/switch.js'
import type { DatabaseSchema } from '../../tasks/synapse/schema-compat.js'
import {
  dbAt158,
  debHost,
  facts,
  installerAt,
  installs,
  lock163,
  noConn,
  rollbackChange,
  spec,
  UPGRADE_STATE,
  v158,
  v163,
  venvListing,
} from './fixtures/release.js'
import { workerHostRelease } from '../../tasks/synapse/release/worker-host-release.js'

const seq = (steps: (Step | PerformedStep)[]) => steps.map((s) => `${s.kind} ${s.target}${s.host ? ` on ${s.host}` : ''}`)

/** A host on which every command succeeds; the probes a rollback reads answer as 1.158.0's code over `db`. */
function healthyHost(name: string, db: DatabaseSchema = dbAt158): Connection & { calls: string[] } {
  const py = '/opt/venvs/matrix-synapse-1.158.0/bin/python'
  const calls: string[] = []
  const answer = (text: string): string => {
    if (text.includes(knownUpdatesCommand(py).text)) return JSON.stringify({ names: [], calls: 0 })
    if (text.includes(databaseSchemaCommand(py, '/etc/matrix-synapse/homeserver.yaml', '/etc/matrix-synapse/conf.d').text))
      return JSON.stringify(db)
    if (text.includes(codeSchemaCommand(py).text)) return JSON.stringify(v158)
    if (text.startsWith('readlink')) return 'matrix-synapse-1.163.2'
    if (text.includes('curl')) return 'OK'
    return ''
  }
  return {
    host: name,
    calls,
    run: (cmd: { text: string }, options?: RunOptions) => {
      calls.push(cmd.text)
      return new Promise((resolve) =>
        resolve(
          checked(
            name,
            { code: 0, stdout: answer(cmd.text), stderr: '', signal: null, durationMs: 1, command: cmd.text, timedOut: false },
            options,
          ),
        ),
      )
    },
    writeFile: () => Promise.resolve(),
  } as unknown as Connection & { calls: string[] }
}

async function planAndApply(s: Parameters<typeof synapseRelease>[0], f: ReturnType<typeof facts>): Promise<Change> {
  const resource = synapseRelease(s)
  const conn = s.method === 'apt' ? debHost(v163) : noConn
  const change = (await resource.plan({ conn, facts: f, predicted: new Prediction(), dryRun: true }))!
  // What the dry run prints is what the change carries for apply.
  expect(change.steps).toEqual(releasePlanOf(change).steps.map(describe))
  const w1 = healthyHost('w1')
  await resource.apply(change, { conn: healthyHost('hs'), state: { aptListsStale: false }, peer: () => Promise.resolve(w1) })
  return change
}

suite('apply does exactly what the dry run printed, in order', () => {
  it('an upgrade with workers here and on a worker host', async () => {
    const remoteWorkers = [{ host: 'w1', units: ['matrix-synapse-worker@generic.service'] }]
    const change = await planAndApply(spec({ remoteWorkers }), facts(UPGRADE_STATE, dbAt158))
    expect(seq(change.performed!)).toEqual(seq(change.steps!))
    expect(change.performed!.map((s) => s.status)).toEqual(change.steps!.map(() => 'done'))
    expect(seq(change.steps!)).toContain('stop matrix-synapse-worker@generic.service on w1')
    expect(change.steps!.map((s) => s.kind)).toEqual([
      'install',
      'check-config',
      'backup',
      'stop',
      'stop',
      'stop',
      'switch',
      'start',
      'wait-health',
      'start',
      'start',
      'after-checks',
      'prune',
    ])
    expect(installs.applied).toContain('/opt/venvs/matrix-synapse-1.163.2')
  })

  it('a rebuild of a venv that drifted from its lock', async () => {
    const drifted =
      'link matrix-synapse-1.163.2\nvenv 300 /opt/venvs/matrix-synapse-1.163.2\nvenv 200 /opt/venvs/matrix-synapse-1.158.0\nactive 1.163.2\nfree 9\n'
    const change = await planAndApply(spec({ lock: lock163 }), facts(drifted, dbAt158, null, v163, venvListing({ twisted: '25.5.0' })))
    expect(change.summary).toMatch(/^rebuild Synapse 1\.163\.2 side by side in \/opt\/venvs\/matrix-synapse-1\.163\.2-r2/)
    expect(seq(change.performed!)).toEqual(seq(change.steps!))
    expect(change.performed!.every((s) => s.status === 'done')).toBe(true)
  })

  it('an apt upgrade', async () => {
    const f = facts('dir\nactive 1.158.0\nfree 900000\n', dbAt158)
    f.set(
      aptSourceFact.id,
      parseAptSource(
        'source\nmadison:  matrix-synapse-py3 | 1.163.2+bookworm1 | http://x bookworm/main amd64 Packages\ninstalled 1.158.0+bookworm1 hi \n',
      ),
    )
    const aptSpec = spec({
      method: 'apt',
      installAt: undefined,
      controllerCode: undefined,
      apt: { source: aptSourceFact, install: (deb) => sh`apt-get install ${`matrix-synapse-py3=${deb}`}` },
    })
    const change = await planAndApply(aptSpec, f)
    expect(seq(change.performed!)).toEqual(seq(change.steps!))
    expect(seq(change.steps!)).toContain('apt-install matrix-synapse-py3 1.163.2+bookworm1')
    expect(change.performed!.every((s) => s.status === 'done')).toBe(true)
  })

  it.each([
    ['a plain switch back', dbAt158, 'switch'],
    [
      'a switch back after restoring the dump (an update the older code does not register)',
      { ...dbAt158, backgroundUpdates: ['new_idx'] },
      'restore',
    ],
  ] satisfies [string, DatabaseSchema, string][])('a rollback: %s', async (_name, db, action) => {
    const conn = healthyHost('hs', db)
    const change = rollbackChange()
    const outcome = await rollBackTo(
      { conn, state: { aptListsStale: false } },
      { ...spec(), version: '1.158.0' },
      '1.158.0',
      new StepRunner(conn, change),
      '/var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump',
      { served: false, consent: false, before: dbAt158 },
    )
    expect(outcome).toMatchObject({ ok: true, decision: { action } })
    expect(seq(change.performed!)).toEqual(seq(outcome.steps.map(describe)))
    expect(change.performed!.every((s) => s.status === 'done' && s.rollback)).toBe(true)
    expect(seq(change.performed!).includes('restore-dump /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump')).toBe(
      action === 'restore',
    )
    // The switch back records where it came from: `provision rollback` reads it.
    expect(conn.calls.some((c) => c.includes('ln -sfn matrix-synapse-1.158.0'))).toBe(true)
  })
})

suite('a worker host (no main process there)', () => {
  const DRIFTED = 'link matrix-synapse-1.163.2\nvenv 300 /opt/venvs/matrix-synapse-1.163.2\nactive 1.163.2\nfree 9\n'
  const release = () =>
    workerHostRelease({
      lock: lock163,
      installAt: installerAt,
      keepVenvs: 2,
      backupDir: '/var/backups/matrix-synapse',
      configChecks: (py) => [sh`${py} -m synapse.config`],
      exec: { signingKey: '/k', postgresLocal: false, database: 'synapse', databaseOwner: 'synapse' },
    })
  const plan = (state: string, live: string | null) =>
    release().plan({ conn: noConn, facts: facts(state, dbAt158, null, v163, live), predicted: new Prediction(), dryRun: true })

  it('a running venv that holds its lock: nothing; one that drifted: rebuilt beside it and switched (its workers restart on the link), never installed into', async () => {
    expect(await plan(DRIFTED, venvListing())).toBeNull()
    const change = (await plan(DRIFTED, venvListing({ twisted: '25.5.0' })))!
    expect(change.summary).toMatch(/^rebuild Synapse 1\.163\.2 side by side in \/opt\/venvs\/matrix-synapse-1\.163\.2-r2 and switch to it/)
    expect(seq(change.steps!)).toEqual([
      'install /opt/venvs/matrix-synapse-1.163.2-r2',
      'check-config /opt/venvs/matrix-synapse-1.163.2-r2',
      'switch /opt/venvs/matrix-synapse-1.163.2-r2',
    ])
    expect(change.touches).toEqual(['/opt/venvs/matrix-synapse'])
    const conn = healthyHost('w1')
    await release().apply(change, { conn, state: { aptListsStale: false } })
    expect(seq(change.performed!)).toEqual(seq(change.steps!))
    expect(conn.calls.some((c) => c.includes('ln -sfn matrix-synapse-1.163.2-r2'))).toBe(true)
  })

  it('another version: its venv beside the running one, then the link', async () => {
    const change = (await plan(
      'link /opt/venvs/matrix-synapse-1.158.0\nvenv 3 /opt/venvs/matrix-synapse-1.158.0\nactive 1.158.0\nfree 9\n',
      null,
    ))!
    expect(seq(change.steps!)).toEqual(['install /opt/venvs/matrix-synapse-1.163.2', 'switch /opt/venvs/matrix-synapse-1.163.2'])
  })

  it('a failed rebuild install removes the half-built venv and leaves the running one as it was', async () => {
    const change = (await plan(DRIFTED, venvListing({ twisted: '25.5.0' })))!
    const conn = healthyHost('w1')
    installs.fail = 'pip install of the lock synapse-lock/1.163.2.txt failed: no index'
    try {
      await expect(release().apply(change, { conn, state: { aptListsStale: false } })).rejects.toThrow(
        'no index; nothing running was changed: Synapse 1.163.2 keeps serving from /opt/venvs/matrix-synapse-1.163.2, which still differs from the lock (a later run or check reports it); /opt/venvs/matrix-synapse-1.163.2-r2 removed',
      )
    } finally {
      installs.fail = undefined
    }
    expect(conn.calls).toEqual(['rm -rf /opt/venvs/matrix-synapse-1.163.2-r2'])
  })
})
