import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type { RunReport } from '../../src/engine/report-types.js'
import { runInventory } from '../../src/engine/run.js'
import type { Task } from '../../src/engine/task.js'
import { loadInventory } from '../../src/inventory/load.js'
import type { Inventory, Role } from '../../src/inventory/types.js'
import { file } from '../../src/resources/file.js'
import { connect } from '../../src/ssh/connect.js'
import { startHosts, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { HOST_RECORD } from '../../src/synapse/paths.js'

const ROLE = 'scale-test' as Role
const FILES = 20

/** 20 resources: 20 small files. */
const task: Task = {
  name: ROLE,
  title: '20 files',
  resources: (ctx) =>
    Array.from({ length: FILES }, (_, i) =>
      file({ path: `/opt/mp-scale-${String(i).padStart(2, '0')}.conf`, content: `host=${ctx.host.name}\nfile=${i}\n`, mode: 0o644 }),
    ),
}

/** Wall time of converged runs of 20 resources on 1 and on 10 hosts (figures for the notes). */
describe.skipIf(!inject('docker'))('engine scale: converged runs of 20 files', () => {
  let env: TestHosts
  let all: Inventory

  const runOn = (inventory: Inventory): Promise<RunReport> =>
    runInventory(inventory, { mode: 'apply', tasks: [task], parallel: 25, connect: (h) => connect(h, { sshConfigFile: false }) })

  beforeAll(async () => {
    const names = Array.from({ length: 10 }, (_, i) => `s${i}`)
    env = await startHosts(names)
    const inv = await loadInventory(
      await writeTestInventory(
        env,
        names.map((name) => ({ name, roles: ['monitoring'] as Role[] })),
        { serverName: 'example.test' },
      ),
    )
    all = { ...inv, hosts: inv.hosts.map((h) => ({ ...h, roles: [ROLE] })) }
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('converges 10 hosts, then times converged runs on 1 and on 10 hosts (no changes reported)', async () => {
    const first = await runOn(all)
    expect(first.hosts.map((h) => h.error ?? h.status)).toEqual(Array(10).fill('changed'))
    // Each host's first apply also writes the host record (HOST_RECORD: the tool set this host up).
    expect(first.totals.add).toBe(10 * (FILES + 1))
    expect(first.hosts.every((h) => h.tasks.some((t) => t.changes.some((c) => c.resource === `file:${HOST_RECORD}`)))).toBe(true)

    const one: Inventory = { ...all, hosts: all.hosts.slice(0, 1) }
    const times: Record<string, number[]> = { '1 host': [], '10 hosts': [] }
    for (let i = 0; i < 3; i++) {
      for (const [label, inv] of [
        ['1 host', one],
        ['10 hosts', all],
      ] as const) {
        const t0 = performance.now()
        const r = await runOn(inv)
        times[label]!.push(Math.round(performance.now() - t0))
        expect(r.hosts.map((h) => h.error ?? h.status)).toEqual(Array(inv.hosts.length).fill('ok'))
        expect(r.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
    console.log(
      `converged run, ${FILES} files per host (wall ms, 3 runs each, median): ` +
        Object.entries(times)
          .map(([k, v]) => `${k}: ${v.join(', ')} (median ${median(v)})`)
          .join('; '),
    )
  })
})
