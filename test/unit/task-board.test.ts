import { describe, expect, it } from 'vitest'
import { runInventory } from '../../src/engine/run.js'
import { TaskBoard } from '../../src/engine/task-board.js'
import type { Task } from '../../src/engine/task.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import type { HostSpec } from '../../src/inventory/types.js'
import { file } from '../../src/resources/file.js'
import { FakeHost } from './fake-host.js'
import { DEBIAN_12 } from './fixtures/hosts/distros.js'

const hosts = [
  { name: 'web', roles: ['synapse'] },
  { name: 'db', roles: ['postgres'] },
] as unknown as HostSpec[]

describe('TaskBoard: tasks that wait for tasks of other hosts', () => {
  it('a wait ends when the needed task is done, with why when it failed or never ran', async () => {
    const board = new TaskBoard(hosts, ['postgres', 'synapse'])
    let settled: string | undefined | null = null
    const waiting = board.waitFor([{ host: 'db', task: 'postgres' }], 'synapse').then((r) => (settled = r))
    await Promise.resolve()
    expect(settled).toBeNull()
    board.taskDone('db', 'postgres', true)
    await waiting
    expect(settled).toBeUndefined()

    const failed = new TaskBoard(hosts, ['postgres', 'synapse'])
    failed.taskDone('db', 'postgres', false)
    expect(await failed.waitFor([{ host: 'db', task: 'postgres' }], 'synapse')).toMatch(/postgres failed on db/)

    const gone = new TaskBoard(hosts, ['postgres', 'synapse'])
    const w = gone.waitFor([{ host: 'db', task: 'postgres' }], 'synapse')
    gone.hostFinished('db')
    expect(await w).toMatch(/db stopped before its postgres task finished/)
  })
  it('nothing to wait for when the needed host or task is not in this run (--limit, --tasks)', async () => {
    expect(
      await new TaskBoard(hosts.slice(0, 1), ['postgres', 'synapse']).waitFor([{ host: 'db', task: 'postgres' }], 'synapse'),
    ).toBeUndefined()
    expect(await new TaskBoard(hosts, ['synapse']).waitFor([{ host: 'db', task: 'postgres' }], 'synapse')).toBeUndefined()
  })
  it('a need on a later task is a programming error (it could wait in a cycle)', async () => {
    await expect(new TaskBoard(hosts, ['postgres', 'synapse']).waitFor([{ host: 'web', task: 'synapse' }], 'postgres')).rejects.toThrow(
      /does not come before it/,
    )
  })
})

describe('runInventory: a task on one host waits for what it needs on another', () => {
  const inventory = () =>
    loadInventoryFromString(
      'defaults:\n  vars: { serverName: example.org, postgres: { password: { env: MP_TEST_DB_PASSWORD } } }\nhosts:\n  web: { address: 203.0.113.10, roles: [apt-keyring, synapse] }\n  db: { address: 203.0.113.11, roles: [postgres] }\n',
      'two-hosts.yaml',
      { MP_TEST_DB_PASSWORD: 'db-password-for-the-test-4821' },
    )
  const order: string[] = []
  const tasks = (dbFails: boolean): Task[] => [
    {
      name: 'postgres',
      title: 'database',
      resources: () => [
        {
          ...file({ path: '/srv/db-ready', content: 'yes\n' }),
          apply: async (change, ctx) => {
            await new Promise((r) => setTimeout(r, 20)) // web would overtake a db that takes any time
            if (dbFails) throw new Error('disk full')
            await ctx.conn.writeFile({ path: '/srv/db-ready', content: 'yes\n' })
            order.push(`db ${change.action}`)
          },
        },
      ],
    },
    {
      name: 'synapse',
      title: 'homeserver',
      needs: () => [{ host: 'db', task: 'postgres' }],
      resources: () => [
        {
          ...file({ path: '/srv/web', content: 'up\n' }),
          apply: async (_c, ctx) => {
            order.push('web apply')
            await ctx.conn.writeFile({ path: '/srv/web', content: 'up\n' })
          },
        },
      ],
    },
  ]
  const run = async (parallel: number, dbFails = false) => {
    order.length = 0
    const fakes = new Map(['web', 'db'].map((n) => [n, new FakeHost(DEBIAN_12, n)]))
    for (const f of fakes.values()) f.mkdirp('/srv')
    const events: string[] = []
    const report = await runInventory(await inventory(), {
      mode: 'apply',
      tasks: tasks(dbFails),
      parallel,
      connect: (h) => Promise.resolve(fakes.get(h.name)!),
      onEvent: (e) => events.push(`${e.host}: ${e.message}`),
    })
    return { report, events }
  }

  it('web (listed first) applies only after db finished; with --parallel 1 web gives its slot to db while it waits', async () => {
    for (const parallel of [1, 2]) {
      const { report, events } = await run(parallel)
      expect(order, `parallel ${parallel}`).toEqual(['db create', 'web apply'])
      expect(report.hosts.map((h) => h.status)).toEqual(['changed', 'changed'])
      expect(events).toContain('web: waiting for postgres on db')
    }
  })
  it('when db fails, web fails that task saying why, and changes nothing', async () => {
    const { report } = await run(2, true)
    expect(order).toEqual([])
    const web = report.hosts.find((h) => h.host === 'web')!
    expect(web.status).toBe('failed')
    expect(web.error).toMatch(/task synapse failed: needs postgres failed on db/)
  })
})
