import { describe, expect, it } from 'vitest'
import type { RunReport } from '../../src/engine/report-types.js'
import { totalsOf } from '../../src/engine/report-types.js'
import { renderJson, renderReport } from '../../src/report/text.js'
import { MASK, Secret } from '../../src/core/secret.js'

const secret = new Secret('report-secret-value-123', 'test')

function report(mode: RunReport['mode']): RunReport {
  const hosts: RunReport['hosts'] = [
    {
      host: 'matrix1',
      status: 'changed',
      warnings: ['postgres: Ubuntu 20.04 left standard support'],
      durationMs: 1234,
      tasks: [
        {
          task: 'synapse',
          status: 'changed',
          durationMs: 10,
          checks: [],
          changes: [
            {
              resource: 'file:/etc/x',
              kind: 'file',
              backupPaths: ['/etc/x'],
              reach: 'paths',
              action: 'update',
              summary: 'update /etc/x (content)',
              diff: `--- /etc/x\n+++ /etc/x\n@@ -1 +1 @@\n-a: 1\n+a: ${secret.reveal()}\n`,
              touches: ['/etc/x'],
            },
            {
              resource: 'apt:postgresql',
              kind: 'package',
              backupPaths: [],
              reach: 'anything',
              action: 'install',
              summary: 'install postgresql',
              touches: ['pkg:postgresql'],
            },
            {
              resource: 'pg-role:u',
              kind: 'database',
              backupPaths: [],
              reach: 'anything',
              action: 'create',
              summary: 'create Postgres role u',
              uncertain: 'Postgres is not installed yet',
              touches: [],
            },
          ],
          restarts: [{ unit: 'matrix-synapse.service', action: 'restart', reason: 'update /etc/x (content)', done: mode === 'apply' }],
        },
      ],
    },
    {
      host: 'db1',
      status: 'ok',
      warnings: [],
      durationMs: 300,
      tasks: [{ task: 'postgres', status: 'ok', durationMs: 5, checks: [], changes: [], restarts: [] }],
    },
  ]
  return { mode, inventory: 'prod.yaml', hosts, totals: totalsOf(hosts), durationMs: 2000 }
}

describe('plan and result rendering', () => {
  it('reads like a Terraform plan: + / ~ lines, restarts with reasons, uncertain changes marked, a summary line', () => {
    const text = renderReport(report('dry-run'), { color: false, diffs: true })
    expect(text).toContain('matrix1\n  synapse\n    ~ update /etc/x (content)\n')
    expect(text).toContain('    + install postgresql\n')
    expect(text).toContain('    + create Postgres role u  (may change: Postgres is not installed yet)')
    expect(text).toContain('    ↻ restart matrix-synapse.service (because: update /etc/x (content))')
    expect(text).toContain('db1: no changes; the host matches the inventory.')
    expect(text).toContain('Plan: 2 to add, 1 to change, 1 to restart (1 decided only during apply).')
    expect(text).toContain('! matrix1: postgres: Ubuntu 20.04 left standard support')
  })
  it('masks secrets in diffs, in text and in JSON', () => {
    const r = report('dry-run')
    const text = renderReport(r, { color: false, diffs: true })
    expect(text).not.toContain(secret.reveal())
    expect(text).toContain(`+a: ${MASK}`)
    const json = renderJson(r)
    expect(json).not.toContain(secret.reveal())
    expect((JSON.parse(json) as RunReport).totals).toEqual({ add: 2, change: 1, restart: 1, failedHosts: 0, uncertain: 1 })
  })
  it('a converged plan says so in one line; apply ends with a recap per host and the time', () => {
    const converged: RunReport = { ...report('dry-run'), hosts: [report('dry-run').hosts[1]!] }
    converged.totals = totalsOf(converged.hosts)
    expect(renderReport(converged, { color: false, diffs: false })).toBe(
      'db1: no changes; the host matches the inventory.\n\nPlan: no changes. Every host matches the inventory.\nFinished in 2.0 s.\n',
    )
    const applied = renderReport(report('apply'), { color: false, diffs: false })
    expect(applied).toContain('↻ restarted matrix-synapse.service')
    expect(applied).toMatch(/matrix1\s+changed\s+ok=0 changed=1 failed=0 skipped=0 {2}1\.2 s/)
    expect(applied).toContain('Applied: 2 added, 1 changed, 1 restarted.')
    expect(applied.trimEnd().endsWith('Finished in 2.0 s.')).toBe(true)
  })
  it('check prints every check with its result and detail, also on a host with nothing to change, and counts them', () => {
    const hosts: RunReport['hosts'] = [
      {
        host: 'matrix1',
        status: 'failed',
        warnings: [],
        durationMs: 900,
        tasks: [
          {
            task: 'workers',
            status: 'failed',
            durationMs: 5,
            changes: [],
            restarts: [],
            checks: [
              {
                name: 'port 32902 free for the federation_reader',
                phase: 'before',
                ok: true,
                detail: 'used by the federation_reader already',
              },
              {
                name: 'matrix-synapse-worker@federation_sender.service active',
                phase: 'after',
                ok: false,
                detail: 'matrix-synapse-worker@federation_sender.service is inactive',
              },
            ],
          },
        ],
      },
      {
        host: 'db1',
        status: 'ok',
        warnings: [],
        durationMs: 300,
        tasks: [
          {
            task: 'postgres',
            status: 'ok',
            durationMs: 5,
            changes: [],
            restarts: [],
            checks: [{ name: 'psql connects', phase: 'after', ok: true, detail: 'connected as synapse_user' }],
          },
        ],
      },
    ]
    const text = renderReport(
      { mode: 'check', inventory: 'prod.yaml', hosts, totals: totalsOf(hosts), durationMs: 1000 },
      { color: false, diffs: false },
    )
    expect(text).toContain(
      'matrix1 FAILED\n  workers\n    ✓ before check port 32902 free for the federation_reader: used by the federation_reader already\n    ✗ after check matrix-synapse-worker@federation_sender.service active: matrix-synapse-worker@federation_sender.service is inactive\n',
    )
    expect(text).toContain('db1\n  postgres\n    ✓ after check psql connects: connected as synapse_user\n')
    expect(text).not.toContain('no changes')
    expect(text).toContain('Checks: 2 passed, 1 failed; 1 host(s) failed.')
  })
})
