/**
 * `provision rollback` on an apt host (tasks/synapse/apt-rollback.ts), the switch record the apt
 * upgrade writes for it, a record that names only a dump that was written, and the pre-upgrade dumps
 * kept to synapse.keepDumps.
 */
import { describe as suite, expect, it } from 'vitest'
import type { Change, PerformedStep, Step } from '../../src/resources/resource.js'
import { checked, type Connection, type FileWrite, type RunOptions } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import { aptSourceFact } from '../../tasks/synapse/apt-package.js'
import { aptRollBack } from '../../tasks/synapse/apt-rollback.js'
import { executeSteps } from '../../tasks/synapse/release/execute.js'
import { dumpsToPrune, parseReleaseState } from '../../tasks/synapse/release/facts.js'
import { describe, type ReleaseStep } from '../../tasks/synapse/release/steps.js'
import type { DatabaseSchema } from '../../tasks/synapse/schema-compat.js'
import { databaseSchemaCommand } from '../../tasks/synapse/schema-probe.js'
import { StepRunner, type ReleaseRecord } from '../../tasks/synapse/switch.js'
import { dbAt158, debHost, facts, planOf, rollbackChange, spec, UPGRADE_STATE, v158, v163 } from './fixtures/release.js'

const seq = (steps: (Step | PerformedStep)[]) => steps.map((s) => `${s.kind} ${s.target}`)
const DUMP = '/var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump'
const WORKERS = ['matrix-synapse-worker@federation_reader.service', 'matrix-synapse-worker@federation_sender.service']
const MADISON = (versions: string[]) =>
  versions.map((v) => `madison:  matrix-synapse-py3 | ${v} | http://x bookworm/main amd64 Packages`).join('\n')

/** An apt host on 1.163.2 whose repository offers `offers`; the older package's code is 1.158.0's; the database is `db`. */
function aptHost(db: DatabaseSchema, offers = ['1.163.2+bookworm1', '1.158.0+bookworm1'], installed = '1.163.2+bookworm1') {
  const calls: string[] = []
  const written: FileWrite[] = []
  const answer = (text: string): string => {
    if (text.startsWith('dpkg-query')) return installed
    if (text === aptSourceFact.command.text) return `source\n${MADISON(offers)}\ninstalled ${installed} hi \n`
    if (text.includes('dpkg-deb --fsys-tarfile'))
      return `${JSON.stringify(v158)}\n${JSON.stringify({ names: ['old_update'], calls: 1, unresolved: 0 })}\n`
    if (
      text.includes(
        databaseSchemaCommand('/opt/venvs/matrix-synapse/bin/python', '/etc/matrix-synapse/homeserver.yaml', '/etc/matrix-synapse/conf.d')
          .text,
      )
    )
      return JSON.stringify(db)
    if (text.includes('curl')) return 'OK'
    return ''
  }
  const conn = {
    host: 'hs',
    run: (cmd: { text: string }, options?: RunOptions) => {
      calls.push(cmd.text)
      return Promise.resolve(
        checked(
          'hs',
          { code: 0, stdout: answer(cmd.text), stderr: '', signal: null, durationMs: 1, command: cmd.text, timedOut: false },
          options,
        ),
      )
    },
    writeFile: (f: FileWrite) => {
      written.push(f)
      return Promise.resolve()
    },
  } as unknown as Connection
  return { conn, calls, written }
}

const blank = rollbackChange
const RECORD: ReleaseRecord & { previous: string } = {
  method: 'apt',
  active: '1.163.2',
  previous: '1.158.0',
  backup: DUMP,
  before: dbAt158,
  switchedAt: '2026-12-07T10:00:00.000Z',
}
const aptSpec = () => ({
  ...spec({ method: 'apt', version: '1.158.0' }),
  apt: { source: aptSourceFact, install: (deb: string) => sh`apt-get install ${`matrix-synapse-py3=${deb}`}` },
})
const rollBack = (h: ReturnType<typeof aptHost>, change: Change, options = { consent: false, dryRun: false }, record = RECORD) =>
  aptRollBack({ conn: h.conn, state: { aptListsStale: false } }, aptSpec(), record, new StepRunner(h.conn, change), options)

suite('provision rollback on an apt host', () => {
  it('the older code runs on the database: the older package installed (held) in the upgrade order with one restart of main, as planned, and recorded', async () => {
    const h = aptHost(dbAt158)
    const dry = blank()
    const planned = await rollBack(h, dry, { consent: false, dryRun: true })
    expect(planned).toMatchObject({ ok: true, decision: { action: 'switch' } })
    expect(planned.message).toMatch(/^would roll back 1\.163\.2 -> 1\.158\.0 \(matrix-synapse-py3 1\.158\.0\+bookworm1\)/)
    expect(dry.performed).toEqual([])
    expect(h.written).toEqual([])
    expect(seq(planned.steps.map(describe))).toEqual([
      ...WORKERS.map((u) => `stop ${u}`),
      'apt-install matrix-synapse-py3 1.158.0+bookworm1',
      'start matrix-synapse.service',
      'wait-health http://127.0.0.1:8008/health',
      ...WORKERS.map((u) => `start ${u}`),
      'after-checks homeserver',
    ])
    expect(planned.steps.find((s) => s.kind === 'start')!.summary).toBe(
      'restart matrix-synapse.service on 1.158.0 (its only restart in this rollback)',
    )

    const change = blank()
    const done = await rollBack(h, change)
    expect(done.ok).toBe(true)
    expect(seq(change.performed!)).toEqual(seq(planned.steps.map(describe)))
    expect(change.performed!.every((s) => s.status === 'done' && s.rollback)).toBe(true)
    expect(h.calls.some((c) => c === 'apt-get install matrix-synapse-py3=1.158.0+bookworm1')).toBe(true)
    // The record now points the other way: a second rollback would return to 1.163.2.
    const record = JSON.parse(h.written.at(-1)!.content as string) as ReleaseRecord
    expect(record).toMatchObject({ method: 'apt', active: '1.158.0', previous: '1.163.2', backup: DUMP })
  })

  it('a database the older code cannot run on: refused, naming the dump and --restore-dump; with it the dump is restored first, main stopped before', async () => {
    const migrated = { ...dbAt158, compatVersion: 95 }
    const refused = await rollBack(aptHost(migrated), blank())
    expect(refused).toMatchObject({ ok: false, decision: { action: 'refuse' }, steps: [] })
    expect(refused.message).toContain(`NOT rolled back to 1.158.0: the database's schema_compat_version is 95`)
    expect(refused.message).toContain(`${DUMP} holds the database from just before the upgrade`)
    expect(refused.message).toContain('provision rollback --restore-dump')
    // An update 1.158.0 does not register, pending on the database: the same rule as pip's.
    expect((await rollBack(aptHost({ ...dbAt158, backgroundUpdates: ['new_idx'] }), blank())).decision.action).toBe('refuse')

    const h = aptHost(migrated)
    const change = blank()
    const restored = await rollBack(h, change, { consent: true, dryRun: false })
    expect(restored).toMatchObject({ ok: true, decision: { action: 'restore', dump: DUMP } })
    expect(seq(change.performed!)).toEqual([
      ...WORKERS.map((u) => `stop ${u}`),
      'stop matrix-synapse.service',
      `restore-dump ${DUMP}`,
      'apt-install matrix-synapse-py3 1.158.0+bookworm1',
      'start matrix-synapse.service',
      'wait-health http://127.0.0.1:8008/health',
      ...WORKERS.map((u) => `start ${u}`),
      'after-checks homeserver',
    ])
    expect(restored.message).toContain(`after restoring ${DUMP}`)
  })

  it('refused before anything stops: the previous version gone from the repository, the package changed since the record', async () => {
    const gone = aptHost(dbAt158, ['1.163.2+bookworm1'])
    const r = await rollBack(gone, blank())
    expect(r.message).toBe(
      `NOT rolled back to 1.158.0: 1.158.0 cannot be installed again: matrix-synapse-py3 1.158.0 is not in the repository (it offers 1.163.2+bookworm1): pin one of those in synapse.version, or wait until the repository has it; the backup is ${DUMP} (README, "Upgrading")`,
    )
    expect(gone.calls.some((c) => c.startsWith('systemctl'))).toBe(false)
    const changed = aptHost(dbAt158, undefined, '1.158.0+bookworm1')
    expect((await rollBack(changed, blank())).message).toContain(
      'the package is 1.158.0+bookworm1, not the 1.163.2 the last change installed',
    )
  })
})

suite('the switch record names only what was written', () => {
  it('a backup step that found no delta pending leaves the dump out of the record the switch (pip) and the install (apt) write', async () => {
    const upToDate = { ...dbAt158, appliedDeltas: v158.deltas }
    const steps: ReleaseStep[] = [
      { kind: 'backup', dump: DUMP, unlessNoDelta: { venv: '/opt/venvs/matrix-synapse-1.158.0', db: upToDate }, summary: 'dump' },
      { kind: 'switch', venv: '/opt/venvs/matrix-synapse-1.158.0', record: { previous: '/opt/venvs/x', backup: DUMP }, summary: 'switch' },
      { kind: 'apt-install', debVersion: '1.158.0+bookworm1', from: '1.163.2', record: { backup: DUMP }, summary: 'install' },
    ]
    // The code schema probe answers 1.158.0's rules: nothing pending on that database.
    const h = aptHost(upToDate)
    const conn = {
      ...h.conn,
      run: (cmd: { text: string }, o?: RunOptions) =>
        cmd.text.includes('matrix-provision')
          ? Promise.resolve(
              checked(
                'hs',
                { code: 0, stdout: JSON.stringify(v158), stderr: '', signal: null, durationMs: 1, command: cmd.text, timedOut: false },
                o,
              ),
            )
          : h.conn.run(cmd as never, o),
    } as Connection
    const change = blank()
    const failure = await executeSteps(steps, {
      apply: { conn, state: { aptListsStale: false } },
      spec: aptSpec(),
      runner: new StepRunner(conn, change),
    })
    expect(failure).toBeUndefined()
    expect(change.performed!.map((s) => s.status)).toEqual(['skipped', 'done', 'done'])
    const records = h.written.map((w) => JSON.parse(w.content as string) as ReleaseRecord)
    expect(records).toHaveLength(2)
    for (const r of records) expect(r.backup).toBeUndefined()
    expect(records[1]).toMatchObject({ method: 'apt', active: '1.158.0', previous: '1.163.2' })
  })
})

suite('pre-upgrade dumps kept to synapse.keepDumps', () => {
  const B = '/var/backups/matrix-synapse'
  const state = (lines: string) => parseReleaseState(lines)
  it('the oldest beyond the bound go, counting the one this change writes; never the one the record names, never a file not ours', () => {
    const s = state(
      [
        `dump 100 ${B}/synapse-1.150.0-before-1.155.0.dump`,
        `dump 300 ${B}/synapse-1.156.0-before-1.157.0.dump`,
        `dump 200 ${B}/synapse-1.155.0-before-1.156.0.dump`,
        `dump 50 ${B}/hand-made.dump`,
        `dump 400 ${B}/synapse-1.156.0-before-1.157.0.2.dump`,
      ].join('\n'),
    )
    expect(s.dumps[0]).toBe(`${B}/synapse-1.156.0-before-1.157.0.2.dump`)
    const planned = `${B}/synapse-1.157.0-before-1.158.0.dump`
    expect(dumpsToPrune(s, 3, planned, [])).toEqual([
      `${B}/synapse-1.155.0-before-1.156.0.dump`,
      `${B}/synapse-1.150.0-before-1.155.0.dump`,
    ])
    expect(dumpsToPrune(s, 3, planned, [`${B}/synapse-1.150.0-before-1.155.0.dump`])).toEqual([`${B}/synapse-1.155.0-before-1.156.0.dump`])
    expect(dumpsToPrune(s, 3, undefined, [])).toEqual([`${B}/synapse-1.150.0-before-1.155.0.dump`])
    expect(dumpsToPrune(s, 10, planned, [])).toEqual([])
  })

  it('the plan of an upgrade removes them last, after the after-checks, with their signing key copies (pip and apt)', async () => {
    const dumps = [1, 2, 3].map((n) => `dump ${n} ${B}/synapse-1.1${n}0.0-before-1.1${n + 1}0.0.dump`).join('\n')
    const record = `record ${JSON.stringify({ active: '/opt/venvs/matrix-synapse-1.158.0', previous: '/opt/venvs/matrix-synapse-1.150.0', backup: `${B}/synapse-1.110.0-before-1.120.0.dump` })}`
    const change = (await planOf(spec({ keepDumps: 2 }), facts(`${UPGRADE_STATE}${dumps}\n${record}\n`, dbAt158)))!
    const last = change.steps!.at(-1)!
    expect(`${last.kind} ${last.target}`).toBe(`prune-dumps ${B}/synapse-1.120.0-before-1.130.0.dump`)
    expect(last.summary).toContain(
      "(keep 2: synapse.keepDumps; /var/backups/matrix-synapse/synapse-1.110.0-before-1.120.0.dump stays, the last switch's record names it)",
    )

    const f = facts(`dir\nactive 1.158.0\nfree 900000\n${dumps}\n`, dbAt158)
    f.set(aptSourceFact.id, aptSourceFact.parse(`source\n${MADISON(['1.163.2+bookworm1'])}\ninstalled 1.158.0+bookworm1 hi \n`, 0))
    const apt = (await planOf(
      { ...aptSpec(), version: '1.163.2', keepDumps: 2, installAt: undefined, controllerCode: undefined },
      f,
      debHost(v163),
    ))!
    expect(seq(apt.steps!).slice(-2)).toEqual([
      'after-checks homeserver',
      `prune-dumps ${B}/synapse-1.120.0-before-1.130.0.dump ${B}/synapse-1.110.0-before-1.120.0.dump`,
    ])
  })
})
