/**
 * The plan is a promise, on a real host: for several change mixes, a dry run taken just before apply
 * predicts exactly the restarts apply does (unit, action, task, order), and the host shows them
 * (a restarted unit has a new start time, every other unit keeps its own). Validation backups are
 * gone once a run has settled its units. Then `provision check` through the built CLI
 * (bin/provision.js) with one worker stopped: every check printed, the stopped worker's checks fail
 * at once, exit 1, in seconds.
 *
 * One host, provisioned once, with every role whose units watch each other's files except Element
 * (Postgres, Redis, Synapse from a PyPI wheelhouse, both workers, Apache, monitoring): the
 * federation_sender's metrics port lives in the workers' file, cacheFactor and extraConfig in the
 * conf.d every Synapse process reads, delegation in Apache's vhosts only.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { pipSynapseVars, synapseWheelhouse } from '../support/artifacts.js'
import { cliOutput, runCli } from '../support/cli.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'

const ROLES = ['postgres', 'redis', 'synapse', 'workers', 'apache', 'monitoring'] as const
const SYNAPSE = 'matrix-synapse.service'
const READER = 'matrix-synapse-worker@federation_reader.service'
const SENDER = 'matrix-synapse-worker@federation_sender.service'
const UNITS = ['postgresql@15-main.service', 'redis-server.service', SYNAPSE, READER, SENDER, 'apache2.service']

interface Restart {
  task: string
  unit: string
  action: string
}
interface Report {
  hosts: {
    status: string
    error?: string
    tasks: {
      task: string
      changes: { resource: string }[]
      restarts: { unit: string; action: string; done: boolean }[]
      checks: { ok: boolean; name: string; detail: string; phase: string }[]
    }[]
  }[]
}
const restartsOf = (r: Report): Restart[] =>
  r.hosts[0]!.tasks.flatMap((t) => t.restarts.map((x) => ({ task: t.task, unit: x.unit, action: x.action })))
const changesOf = (r: Report) => r.hosts[0]!.tasks.map((t) => ({ task: t.task, changes: t.changes.map((c) => c.resource) }))

describe.skipIf(!inject('docker'))('plan = apply on a real host: restarts per change mix, backups, check', () => {
  let env: TestHosts
  let hs: TestHost
  let base: Record<string, unknown>
  let current: string

  const inventoryWith = (vars: Record<string, unknown>) =>
    writeTestInventory(
      env,
      [{ name: 'engine-pa', roles: [...ROLES] }],
      { ...base, ...vars, synapse: { ...(base.synapse as object), ...(vars.synapse ?? {}) } },
      `inventory-${Date.now()}.yaml`,
    )
  /** Each unit's last (re)start, from systemd. */
  const startTimes = async (): Promise<Record<string, string>> => {
    const out = (await hs.exec(`systemctl show -p Id,ActiveEnterTimestampMonotonic ${UNITS.join(' ')}`)).stdout
    return Object.fromEntries(
      out
        .trim()
        .split('\n\n')
        .map((b) => [/Id=(.*)/.exec(b)![1]!, /ActiveEnterTimestampMonotonic=(\d+)/.exec(b)![1]!]),
    )
  }
  const apacheMainPid = async () => (await hs.exec('systemctl show -p MainPID --value apache2')).stdout.trim()

  beforeAll(async () => {
    const t0 = Date.now()
    const [wheelhouse, hosts] = await Promise.all([synapseWheelhouse('3.11'), startHosts(['engine-pa'])])
    env = hosts
    hs = env.get('engine-pa')
    base = { serverName: 'pa.test', publicHost: 'matrix.pa.test', synapse: pipSynapseVars(wheelhouse) }
    current = await inventoryWith({})
    const first = await provision(['--inventory', current, '--json'])
    expect(first.code, first.stdout + first.stderr).toBe(0)
    console.log(`plan-apply: host provisioned in ${Date.now() - t0} ms`)
  }, 1_500_000)
  afterAll(async () => {
    await env?.stop()
  })

  const mixes: { name: string; vars: Record<string, unknown>; expected: Restart[] }[] = [
    {
      name: 'cacheFactor and the federation_sender metrics port (conf.d watched by three units of two tasks, plus a worker file)',
      vars: { synapse: { cacheFactor: 4 }, workers: { federationSender: { metricsPort: 32970 } } },
      expected: [
        { task: 'synapse', unit: SYNAPSE, action: 'restart' },
        { task: 'workers', unit: READER, action: 'restart' },
        { task: 'workers', unit: SENDER, action: 'restart' },
      ],
    },
    {
      name: 'a Synapse-only change (extra config in conf.d): each worker restarts once, under its own task',
      vars: { synapse: { cacheFactor: 4, extraConfig: { max_upload_size: '20M' } }, workers: { federationSender: { metricsPort: 32970 } } },
      expected: [
        { task: 'synapse', unit: SYNAPSE, action: 'restart' },
        { task: 'workers', unit: READER, action: 'restart' },
        { task: 'workers', unit: SENDER, action: 'restart' },
      ],
    },
    {
      name: 'an Apache-only change (delegation on port 8448): one reload, no Synapse restart',
      vars: {
        synapse: { cacheFactor: 4, extraConfig: { max_upload_size: '20M' } },
        workers: { federationSender: { metricsPort: 32970 } },
        apache: { delegation: 'port-8448' },
      },
      expected: [{ task: 'apache', unit: 'apache2.service', action: 'reload' }],
    },
    {
      name: 'everything back at once: Synapse, both workers and Apache, each once, in task order',
      vars: {},
      expected: [
        { task: 'synapse', unit: SYNAPSE, action: 'restart' },
        { task: 'workers', unit: READER, action: 'restart' },
        { task: 'workers', unit: SENDER, action: 'restart' },
        { task: 'apache', unit: 'apache2.service', action: 'reload' },
      ],
    },
  ]

  for (const mix of mixes) {
    it(`${mix.name}: applied restarts == planned, and the host shows them`, async () => {
      current = await inventoryWith(mix.vars)
      const planned = await provision(['--inventory', current, '--dry-run', '--json'])
      expect(planned.code, planned.stderr).toBe(0)
      const plan = JSON.parse(planned.stdout) as Report
      expect(restartsOf(plan)).toEqual(mix.expected)

      const before = await startTimes()
      const pidBefore = await apacheMainPid()
      const t0 = Date.now()
      const applied = await provision(['--inventory', current, '--json'])
      const result = JSON.parse(applied.stdout) as Report
      expect(applied.code, result.hosts[0]!.error).toBe(0)
      console.log(
        `plan-apply: ${mix.name.split(' (')[0]}: applied in ${Date.now() - t0} ms, restarts ${restartsOf(result)
          .map((r) => `${r.task}/${r.action} ${r.unit}`)
          .join(', ')}`,
      )
      expect(restartsOf(result)).toEqual(restartsOf(plan))
      expect(changesOf(result)).toEqual(changesOf(plan))
      expect(result.hosts[0]!.tasks.flatMap((t) => t.restarts).every((r) => r.done)).toBe(true)

      // On the host: exactly the planned units restarted (a reload keeps Apache's main process).
      const after = await startTimes()
      const restarted = UNITS.filter((u) => after[u] !== before[u])
      expect(restarted).toEqual(UNITS.filter((u) => mix.expected.some((r) => r.unit === u && r.action === 'restart')))
      expect(await apacheMainPid()).toBe(pidBefore)
      // Nothing pending, and no validation backup (copies of old, secret-bearing files) left behind.
      expect((await hs.exec('cat /var/lib/matrix-provision/pending-restarts')).stdout).toBe('')
      const backups = await hs.exec('ls -A /var/lib/matrix-provision/backup 2>&1')
      expect(backups.stdout, 'validation backups left on the host').toMatch(/No such file or directory/)
      // Restarting Synapse and its workers, each validated first and checked after: minutes on a loaded machine.
    }, 900_000)
  }

  it('a second run of the last mix restarts nothing', async () => {
    const again = await provision(['--inventory', current])
    expect(again.code, again.stdout).toBe(0)
    expect(again.stdout).toContain('engine-pa: no changes')
  })

  describe('provision check through bin/provision.js', () => {
    /** The converged host's check time: the baseline a stopped worker must not stretch by polling. */
    let convergedMs = 0
    // The built bundle, as users run it (the global setup rebuilds a stale one).
    const cli = async (args: string[]) => {
      const r = await runCli(args)
      return { ...r, ms: r.durationMs, out: cliOutput(r) }
    }

    it('a converged host: every check printed with its result, exit 0', async () => {
      const r = await cli(['check', '--inventory', current])
      expect(r.code, r.out).toBe(0)
      expect(r.stdout).not.toContain('no changes')
      for (const line of [
        `✓ after check ${SYNAPSE} active: active`,
        '✓ after check /health answers: http://127.0.0.1:8008/health answered',
        `✓ after check ${SENDER} active: active`,
        '✓ after check federation_sender metrics on 127.0.0.1:32980: http://127.0.0.1:32980/_synapse/metrics answered',
        '✓ before check supported target: Debian GNU/Linux 12 (bookworm)',
      ]) {
        expect(r.stdout).toContain(line)
      }
      expect(r.stdout).toMatch(/Checks: \d+ passed, 0 failed\./)
      convergedMs = r.ms
      console.log(`plan-apply: check on a converged host: ${r.ms} ms`)
    })

    it('one worker stopped: its checks fail at once (no polling), the others pass, exit 1, in seconds', async () => {
      await hs.exec(`systemctl stop ${SENDER}`)
      try {
        const r = await cli(['check', '--inventory', current])
        console.log(`plan-apply: check with ${SENDER} stopped: exit ${r.code} in ${r.ms} ms`)
        expect(r.code, r.out).toBe(1)
        expect(r.stdout).toContain(`✗ after check ${SENDER} active: ${SENDER} is inactive`)
        expect(r.stdout).toContain(
          `✗ after check federation_sender metrics answer (its liveness probe): ${SENDER} is inactive, so http://127.0.0.1:32980/_synapse/metrics cannot answer`,
        )
        expect(r.stdout).toContain(`✗ after check federation_sender metrics on 127.0.0.1:32980: ${SENDER} is inactive`)
        expect(r.stdout).toContain('✓ after check federation_reader /health answers')
        expect(r.stdout).toContain(`✓ after check ${SYNAPSE} active: active`)
        expect(r.stdout).toMatch(/Checks: \d+ passed, 3 failed; 1 host\(s\) failed\./)
        // Before, the stopped worker's HTTP checks polled 90 s and 60 s (151 s measured); now no more
        // than the converged host's check plus noise (the machine may be loaded).
        expect(r.ms).toBeLessThan(convergedMs + 30_000)
        expect(r.ms).toBeLessThan(60_000)
        // --wait does not make a stopped unit worth waiting for.
        const waited = await cli(['check', '--inventory', current, '--wait', '60'])
        console.log(`plan-apply: check --wait 60 with ${SENDER} stopped: exit ${waited.code} in ${waited.ms} ms`)
        expect(waited.code).toBe(1)
        expect(waited.ms).toBeLessThan(60_000)
        // The JSON view is the same report.
        const json = await cli(['check', '--inventory', current, '--json'])
        expect(json.code).toBe(1)
        const failed = (JSON.parse(json.stdout) as Report).hosts[0]!.tasks.flatMap((t) => t.checks.filter((c) => !c.ok).map((c) => c.name))
        expect(failed).toEqual([
          `${SENDER} active`,
          'federation_sender metrics answer (its liveness probe)',
          'federation_sender metrics on 127.0.0.1:32980',
        ])
      } finally {
        await hs.exec(`systemctl start ${SENDER}`)
      }
    })

    it('--wait must be whole seconds: exit 2 with a clear message', async () => {
      const r = await cli(['check', '--inventory', current, '--wait', 'soon'])
      expect(r.code).toBe(2)
      expect(r.stderr).toContain('--wait: expected whole seconds from 0 to 3600, got "soon"')
      expect(r.stderr).not.toMatch(/\n\s+at /)
    })
  })
})
