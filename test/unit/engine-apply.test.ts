/**
 * The engine's apply on the in-memory host (test/unit/fake-host.ts), with small tasks made here:
 * what a failing run leaves behind and reports (queued writes, rejected configurations, restarts
 * inherited from a run that died, validation backups), and that the engine reads typed fields of a
 * change, not its id. The whole-stack plan = apply comparison is in task-plans.test.ts; the same on a
 * real host in test/integration/plan-apply.test.ts.
 */
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { runHost } from '../../src/engine/host-run.js'
import type { HostReport } from '../../src/engine/report-types.js'
import type { Task } from '../../src/engine/task.js'
import { fileState } from '../../src/facts/files.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import type { Role } from '../../src/inventory/types.js'
import { file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { osRelease } from '../../src/facts/system.js'
import { sh } from '../../src/core/shell.js'
import { FakeHost, shellWords } from './fake-host.js'
import { DEBIAN_12 } from './fixtures/hosts/distros.js'
import { HOST_RECORD, PENDING_RESTARTS, STATE_DIR } from '../../src/synapse/paths.js'

const inventory = await loadInventoryFromString(
  'defaults:\n  vars: { serverName: example.org }\nhosts:\n  web: { address: 203.0.113.10, roles: [apache] }\n',
  '/tmp/engine-apply.yaml',
)

const CONF = '/etc/apache2/conf-enabled/mp-test.conf'
const GOOD = '# a good configuration\nServerSignature Off\n'
/** The fake's configtest rejects a directive of a module that is not enabled (as Apache does). */
const BAD = '# a rejected configuration\nSSLEngine on\n'
const APACHE = 'apache2.service'
const BACKUP_DIR = `${STATE_DIR}/backup`
const backupManifestOf = (unit: string) => `${BACKUP_DIR}/${encodeURIComponent(unit)}.manifest.json`

/** A host with Apache installed and running, and a configuration file in place. */
function apacheHost(conf = GOOD): FakeHost {
  const host = new FakeHost(DEBIAN_12, 'web')
  host.put(`/lib/systemd/system/${APACHE}`, '[Unit]\nDescription=Apache\n')
  host.mkdirp('/etc/apache2/conf-enabled')
  host.put(CONF, conf)
  host.startUnit(APACHE, true)
  // Provisioned by the tool before: its host record is there (a first run would write it first).
  host.mkdirp(STATE_DIR)
  host.put(HOST_RECORD, '{"managedBy":"matrix-provision","origin":"provisioned","since":"2026-11-30"}\n', { mode: 0o600 })
  return host
}

const apacheService = () => service({ unit: APACHE, watch: ['/etc/apache2/'], reload: true, validate: sh`apache2ctl configtest` })

/**
 * A resource of a kind the engine has never heard of (id `template:`), rendering a file. It states its
 * backup in the typed field Change.backupPaths; the engine must honour that without knowing the id.
 */
function template(path: string, content: string): Resource {
  const fact = fileState(path)
  const sha = createHash('sha256').update(content).digest('hex')
  const id = `template:${path}`
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      if (ctx.facts.get(fact).sha256 === sha) return null
      return {
        resource: id,
        kind: 'file',
        action: 'update',
        summary: `render ${path}`,
        touches: [path],
        backupPaths: [path],
        reach: 'paths',
      }
    },
    async apply(_c, ctx) {
      await ctx.conn.writeFile({ path, content })
    },
  }
}

const task = (name: Role, resources: () => Resource[]): Task => ({ name, title: name, resources })
const run = (host: FakeHost, tasks: Task[], mode: 'apply' | 'dry-run' = 'apply'): Promise<HostReport> =>
  runHost({ ...inventory.hosts[0]!, roles: tasks.map((t) => t.name) }, host, { mode, tasks, inventory })
const backups = (host: FakeHost) => [...host.fs.keys()].filter((p) => p.startsWith(`${BACKUP_DIR}/`)).sort()

describe('queued file writes when a later resource fails', () => {
  it('are sent before the task fails, and the report lists only changes that reached the host', async () => {
    const host = apacheHost()
    const failing: Resource = {
      id: 'broken:thing',
      facts: () => [],
      plan: () => Promise.reject(new Error('this resource cannot be planned')),
      apply: () => Promise.resolve(),
    }
    const report = await run(host, [
      task('apache', () => [file({ path: '/etc/mp-a.conf', content: 'a\n' }), file({ path: '/etc/mp-b.conf', content: 'b\n' }), failing]),
    ])
    expect(host.unexpected).toEqual([])
    expect(report.status).toBe('failed')
    expect(report.tasks[0]!.error).toContain('this resource cannot be planned')
    const reported = report.tasks[0]!.changes.map((c) => c.resource)
    expect(reported).toEqual(['file:/etc/mp-a.conf', 'file:/etc/mp-b.conf'])
    // Every change the report lists happened.
    expect(host.text('/etc/mp-a.conf')).toBe('a\n')
    expect(host.text('/etc/mp-b.conf')).toBe('b\n')
  })

  it('whose batch fails to reach the host are reported as not applied', async () => {
    const host = apacheHost()
    const failing: Resource = {
      id: 'broken:thing',
      facts: () => [],
      plan: () => Promise.reject(new Error('plan failed')),
      apply: () => Promise.resolve(),
    }
    // The batch fails on the host: the parent directory does not exist.
    const report = await run(host, [task('apache', () => [file({ path: '/nonexistent/x.conf', content: 'x\n' }), failing])])
    expect(report.status).toBe('failed')
    expect(report.tasks[0]!.changes).toEqual([])
    expect(report.tasks[0]!.error).toContain('not applied (their writes did not reach the host): create /nonexistent/x.conf')
  })
})

describe('a configuration the unit rejects', () => {
  it('a resource of a new kind gets its rollback backup from its typed backupPaths, not from its id', async () => {
    const host = apacheHost()
    const report = await run(host, [task('apache', () => [template(CONF, BAD), apacheService()])])
    expect(host.unexpected).toEqual([])
    expect(report.status).toBe('failed')
    expect(report.error).toContain(
      `apache2.service: the new configuration failed validation (apache2ctl configtest); restored the previous files (${CONF})`,
    )
    expect(host.text(CONF)).toBe(GOOD)
    expect(host.restarts).toEqual([])
    expect(host.text(PENDING_RESTARTS)).toBe('')
    expect(backups(host)).toEqual([])
  })

  it('a restart inherited from a run that died is not forgotten when validation fails and nothing can be restored: it stays pending and every run fails', async () => {
    // An earlier run wrote the bad file and died before the reload (no backup kept, as older versions did).
    const host = apacheHost(BAD)
    host.mkdirp(STATE_DIR)
    host.put(PENDING_RESTARTS, `${APACHE}\n`)
    const tasks = [task('apache', () => [template(CONF, BAD), apacheService()])]
    for (const attempt of [1, 2]) {
      const report = await run(host, tasks)
      expect(host.unexpected).toEqual([])
      expect(report.status, `run ${attempt}`).toBe('failed')
      expect(report.error).toContain(
        'apache2.service: the configuration on the host fails validation (apache2ctl configtest) and no earlier version of its files is kept to restore',
      )
      expect(report.error).toContain('reload pending')
      expect(host.text(PENDING_RESTARTS)).toBe(`${APACHE}\n`)
      expect(host.restarts).toEqual([])
    }
    // The dry run still shows the reload that is due.
    const plan = await run(host, tasks, 'dry-run')
    expect(plan.tasks[0]!.restarts.map((r) => [r.unit, r.action])).toEqual([[APACHE, 'reload']])
  })

  it('a restart inherited from a run that died after backing up: the earlier files are restored from its manifest, and the next run tries again', async () => {
    const host = apacheHost()
    const tasks = [task('apache', () => [template(CONF, BAD), apacheService()])]
    // A run that dies between the write and the reload: the fake drops the connection on systemctl.
    const original = host.run.bind(host)
    host.run = async (command, options) => {
      if (command.text.startsWith('apache2ctl configtest')) throw new Error('connection lost')
      return original(command, options)
    }
    const died = await run(host, tasks)
    host.run = original
    expect(died.status).toBe('failed')
    expect(host.text(CONF)).toBe(BAD)
    expect(host.text(PENDING_RESTARTS)).toBe(`${APACHE}\n`)
    expect(backups(host)).toEqual([`${BACKUP_DIR}/${encodeURIComponent(CONF)}`, backupManifestOf(APACHE)].sort())

    const next = await run(host, tasks)
    expect(host.unexpected).toEqual([])
    expect(next.status).toBe('failed')
    expect(next.tasks[0]!.changes).toEqual([]) // the bad file was on disk already: nothing to write
    expect(next.error).toContain(`restored the previous files (${CONF})`)
    expect(host.text(CONF)).toBe(GOOD)
    expect(host.text(PENDING_RESTARTS)).toBe('')
    expect(backups(host)).toEqual([])
    // The inventory still asks for the rejected file: the next run writes it, and fails again, restoring.
    const third = await run(host, tasks)
    expect(third.status).toBe('failed')
    expect(third.tasks[0]!.changes.map((c) => c.summary)).toEqual([`render ${CONF}`])
    expect(third.error).toContain(`restored the previous files (${CONF})`)
    expect(host.text(CONF)).toBe(GOOD)
    expect(host.text(PENDING_RESTARTS)).toBe('')
  })
})

describe('validation backups', () => {
  it('are removed once the unit is settled: no copy of an old (possibly secret-bearing) file stays on the host', async () => {
    const host = apacheHost()
    const report = await run(host, [
      task('apache', () => [file({ path: CONF, content: '# changed\nServerSignature On\n' }), apacheService()]),
    ])
    expect(host.unexpected).toEqual([])
    expect(report.status).toBe('changed')
    expect(report.tasks[0]!.restarts.map((r) => [r.unit, r.action, r.done])).toEqual([[APACHE, 'reload', true]])
    expect(host.restarts).toEqual([`reload ${APACHE}`])
    expect(backups(host)).toEqual([])
    expect(host.text(PENDING_RESTARTS)).toBe('')
  })
})

describe('services started together', () => {
  it('consecutive service starts go out as one systemctl enable (with the first start) and starts of four units per call, each change still reported in the plan order', async () => {
    const host = apacheHost()
    const units = ['mp-a.service', 'mp-b.service', 'mp-c.service', 'mp-d.service', 'mp-e.service', 'mp-f.service']
    for (const u of units) host.put(`/etc/systemd/system/${u}`, '[Unit]\nDescription=x\n')
    host.daemonReloadDue.clear() // installed before this run, as systemd knows them
    const plan = await run(host, [task('apache', () => units.map((unit) => service({ unit })))], 'dry-run')
    const report = await run(host, [task('apache', () => units.map((unit) => service({ unit })))])
    expect(host.unexpected).toEqual([])
    expect(report.status).toBe('changed')
    expect(report.tasks[0]!.changes.map((c) => c.resource)).toEqual(plan.tasks[0]!.changes.map((c) => c.resource))
    expect(report.tasks[0]!.changes.map((c) => c.resource)).toEqual(units.map((u) => `service:${u}`))
    // The enable and the first wave share one round trip.
    expect(host.commands.filter((c) => /^(SYSTEMCTL_SKIP_SYSV=1 )?systemctl (enable|start)/.test(c))).toEqual([
      `SYSTEMCTL_SKIP_SYSV=1 systemctl enable ${units.join(' ')} || exit 97; systemctl start ${units.slice(0, 4).join(' ')}`,
      `systemctl start ${units.slice(4).join(' ')}`,
    ])
    for (const u of units) expect(host.units.get(u)).toMatchObject({ active: true, enabled: true })
  })
})

describe('services started together: enable fails', () => {
  it('the combined enable-and-start that exits 97 names each unit with its status; nothing is started', async () => {
    const host = apacheHost()
    const units = ['mp-a.service', 'mp-b.service']
    for (const u of units) host.put(`/etc/systemd/system/${u}`, '[Unit]\nDescription=x\n')
    host.daemonReloadDue.clear()
    const ran: string[] = []
    const result = (command: string, code: number, stdout: string, stderr: string) =>
      Promise.resolve({ command, code, signal: null, stdout, stderr, durationMs: 1, timedOut: false })
    // The fake host as it is, except that enabling fails on the host (as for a masked unit).
    const conn = new Proxy(host, {
      get(target, key) {
        if (key === 'run')
          return (c: Parameters<FakeHost['run']>[0], o?: Parameters<FakeHost['run']>[1]) => {
            ran.push(c.text)
            if (/^(SYSTEMCTL_SKIP_SYSV=1 )?systemctl enable/.test(c.text))
              return result(c.text, 97, '', 'Failed to enable unit: Unit file mp-a.service is masked.')
            if (c.text.startsWith('systemctl status')) return result(c.text, 3, `${shellWords(c.text).at(-1)!} - x (masked)`, '')
            return target.run(c, o)
          }
        const value: unknown = Reflect.get(target, key, target)
        return typeof value === 'function' ? (value.bind(target) as unknown) : value
      },
    })
    const tasks: Task[] = [{ name: 'apache', title: 'units', resources: () => units.map((unit) => service({ unit })) }]
    const report = await runHost(inventory.hosts[0]!, conn, { mode: 'apply', tasks, inventory })
    expect(report.status).toBe('failed')
    for (const u of units) {
      expect(report.error).toContain(`enable and start (now inactive) ${u}: Failed to enable unit`)
      expect(report.error).toContain(`${u} - x (masked)`)
    }
    expect(report.error).toContain('Unit file mp-a.service is masked.')
    expect(ran.filter((c) => c.startsWith('systemctl start'))).toEqual([])
    for (const u of units) expect(host.units.get(u)?.active ?? false).toBe(false)
  })
})

describe('units settled together', () => {
  it('one rejected configuration restarts none of the set: its files are restored, the other unit stays due on the host', async () => {
    const host = apacheHost()
    const OTHER = 'mp-other.service'
    host.put(`/etc/systemd/system/${OTHER}`, '[Unit]\nDescription=x\n')
    host.daemonReloadDue.clear()
    host.startUnit(OTHER, true)
    const report = await run(host, [
      task('apache', () => [template(CONF, BAD), apacheService(), service({ unit: OTHER, watch: ['/etc/apache2/'] })]),
    ])
    expect(host.unexpected).toEqual([])
    expect(report.status).toBe('failed')
    expect(report.error).toContain(
      `apache2.service: the new configuration failed validation (apache2ctl configtest); restored the previous files (${CONF})`,
    )
    expect(host.text(CONF)).toBe(GOOD)
    expect(host.restarts).toEqual([])
    expect(host.text(PENDING_RESTARTS)).toBe(`${OTHER}\n`)
  })
})

describe('the lock and the base facts', () => {
  it('apply reads the base facts inside the lock: one spawn carries the probe on its stdin, and the resources probe follows on it', async () => {
    const host = apacheHost()
    const spawned: { command: string; stdin?: string }[] = []
    const ran: string[] = []
    // The fake host as it is, with its spawns and runs noted.
    const conn = new Proxy(host, {
      get(target, key) {
        if (key === 'spawn')
          return (c: Parameters<FakeHost['spawn']>[0], o?: { stdin?: string }) => (
            spawned.push({ command: c.text, stdin: o?.stdin }),
            target.spawn(c, o)
          )
        if (key === 'run')
          return (c: Parameters<FakeHost['run']>[0], o?: Parameters<FakeHost['run']>[1]) => (ran.push(c.text), target.run(c, o))
        const value: unknown = Reflect.get(target, key, target)
        return typeof value === 'function' ? (value.bind(target) as unknown) : value
      },
    })
    const task: Task = { name: 'apache', title: 'conf', resources: () => [file({ path: CONF, content: GOOD })] }
    const report = await runHost(inventory.hosts[0]!, conn, { mode: 'apply', tasks: [task], inventory })
    expect(report.error).toBeUndefined()
    expect(report.status).toBe('ok')
    expect(spawned).toHaveLength(1)
    expect(spawned[0]!.command).toContain('flock -n 9')
    const [length, script] = [spawned[0]!.stdin!.split('\n', 1)[0]!, spawned[0]!.stdin!.replace(/^\d+\n/, '')]
    expect(Number(length)).toBe(Buffer.byteLength(script))
    expect(script).toContain(osRelease.command.text)
    // Converged: nothing goes out as a command of its own; both probes ran on the lock's channel.
    expect(ran).toEqual([])
    expect(host.commands.filter((c) => c === 'sh -s')).toHaveLength(2)
  })

  it('a dry run takes no lock: the base facts are the first of its two probes', async () => {
    const host = apacheHost()
    host.frozen = true
    const task: Task = { name: 'apache', title: 'conf', resources: () => [file({ path: CONF, content: GOOD })] }
    const report = await runHost(inventory.hosts[0]!, host, { mode: 'dry-run', tasks: [task], inventory })
    expect(report.status).toBe('ok')
    expect(host.commands).toEqual(['sh -s', 'sh -s'])
  })
})
