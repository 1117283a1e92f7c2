import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type { HostReport, RunReport } from '../../src/engine/report-types.js'
import { runInventory } from '../../src/engine/run.js'
import type { Task } from '../../src/engine/task.js'
import { FactValues, type Fact } from '../../src/facts/fact.js'
import { fileState } from '../../src/facts/files.js'
import { gatherFacts, probeScript } from '../../src/facts/probe.js'
import { unitState } from '../../src/facts/systemd.js'
import { loadInventory } from '../../src/inventory/load.js'
import type { HostSpec, Inventory, Role } from '../../src/inventory/types.js'
import { aptPackages } from '../../src/resources/apt-packages.js'
import { command } from '../../src/resources/command.js'
import { directory, file, symlink } from '../../src/resources/file.js'
import { lineInFile } from '../../src/resources/line-in-file.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/core/shell.js'
import { connect } from '../../src/ssh/connect.js'
import type { SshConnection } from '../../src/ssh/ssh-connection.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'

const run = promisify(execFile)

const ROOT = '/opt/mp-test'
const UNIT = 'mp-test.service'
const UNIT_FILE = `/etc/systemd/system/${UNIT}`
const TEST_ROLE = 'engine-test' as Role

/** What the test task declares; tests change it between runs as a user changes an inventory. */
interface Desired {
  greeting: string
  key: string
  link: string
  packages: string[]
  /** Non-empty: a guarded command that takes 5 s (runs once per distinct value). */
  slow: string
}

const initial: Desired = { greeting: 'hello', key: 'alpha', link: 'app.conf', packages: ['tree'], slow: '' }
let desired: Desired = { ...initial }

/** A test-only task that uses every resource kind except the Postgres ones (covered by the postgres task). */
const task: Task = {
  name: TEST_ROLE,
  title: 'every resource kind',
  resources: () => [
    directory({ path: ROOT, mode: 0o755 }),
    file({ path: `${ROOT}/app.conf`, content: `greeting=${desired.greeting}\n`, mode: 0o644 }),
    file({ path: `${ROOT}/private.conf`, content: 'owned by nobody\n', owner: 'nobody', group: 'nogroup', mode: 0o640 }),
    symlink({ path: `${ROOT}/current`, target: desired.link }),
    lineInFile({ path: `${ROOT}/lines.conf`, line: `key=${desired.key}`, match: '^key=', create: true }),
    aptPackages({ packages: desired.packages, debconf: ['mp-test mp-test/harmless string yes'] }),
    file({
      path: UNIT_FILE,
      content: `[Unit]\nDescription=matrix-provision engine test unit\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n`,
    }),
    command({ name: 'stamp', creates: `${ROOT}/stamp`, command: sh`date +%s > ${`${ROOT}/stamp`}` }),
    ...(desired.slow
      ? [
          command({
            name: 'slow',
            summary: `slow step ${desired.slow}`,
            unless: sh`test -e ${`${ROOT}/slow-${desired.slow}`}`,
            command: sh`sleep 5 && touch ${`${ROOT}/slow-${desired.slow}`}`,
          }),
        ]
      : []),
    service({ unit: UNIT, watch: [`${ROOT}/app.conf`] }),
  ],
}

const changesOf = (h: HostReport) => h.tasks.flatMap((t) => t.changes)
const restartsOf = (h: HostReport) => h.tasks.flatMap((t) => t.restarts)

describe.skipIf(!inject('docker'))('engine: every resource kind on real hosts', () => {
  let env: TestHosts
  let one: TestHost
  let two: TestHost
  let inventory: Inventory
  const privileges: string[] = []

  async function load(file: string): Promise<Inventory> {
    const inv = await loadInventory(file)
    return { ...inv, hosts: inv.hosts.map((h) => ({ ...h, roles: [TEST_ROLE] })) }
  }

  async function apply(
    mode: 'apply' | 'dry-run' = 'apply',
    inv = inventory,
    onEvent?: (e: { host: string; message: string }) => void,
  ): Promise<RunReport> {
    return runInventory(inv, {
      mode,
      tasks: [task],
      parallel: 10,
      connect: async (h: HostSpec) => {
        const c: SshConnection = await connect(h, { sshConfigFile: false })
        privileges.push(`${h.name}:${c.privilege}`)
        return c
      },
      onEvent,
    })
  }

  const host = (r: RunReport, name: string) => r.hosts.find((h) => h.host === name)!
  const started = async (h: TestHost) => (await h.exec(`systemctl show -p ActiveEnterTimestampMonotonic --value ${UNIT}`)).stdout.trim()
  const startsInJournal = async (h: TestHost) =>
    Number((await h.exec(`journalctl --no-pager -o cat -u ${UNIT} | grep -c '^Started' || true`)).stdout.trim())
  /** Everything the task touches, plus the package and debconf databases and the engine's state. */
  const snapshot = async (h: TestHost) =>
    (
      await h.exec(
        `find ${ROOT} ${UNIT_FILE} /var/lib/matrix-provision -printf '%p %u:%g %m %l\\n' 2>&1 | sort; ` +
          `find ${ROOT} ${UNIT_FILE} /var/lib/matrix-provision -type f -exec sha256sum {} + 2>&1 | sort; ` +
          `dpkg -l | sha256sum; sha256sum /var/cache/debconf/config.dat; ls /var/lib/apt/lists | sha256sum; ` +
          `systemctl show -p ActiveEnterTimestampMonotonic,UnitFileState ${UNIT}`,
      )
    ).stdout

  beforeAll(async () => {
    env = await startHosts(['one', 'two'])
    one = env.get('one')
    two = env.get('two')
    inventory = await load(
      await writeTestInventory(
        env,
        [
          { name: 'one', roles: ['monitoring'] },
          { name: 'two', roles: ['monitoring'] },
        ],
        { serverName: 'example.test' },
      ),
    )
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('batched fact probes (one stat, one systemctl show) read the same states as one probe per fact', async () => {
    const dir = '/opt/mp-batch'
    await two.exec(
      `mkdir -p ${dir}/sub && printf 'x' > ${dir}/file && : > ${dir}/empty && ln -s file ${dir}/link && ln -s nowhere ${dir}/dangling && ` +
        `printf y > '${dir}/we|ird name' && chown nobody:nogroup ${dir}/file && chmod 0640 ${dir}/file && printf z > '${dir}/new\nline'`,
    )
    const paths = ['file', 'empty', 'link', 'dangling', 'sub', 'missing', 'we|ird name', 'new\nline'].map((n) => `${dir}/${n}`)
    const files = paths.map(fileState)
    const units = ['ssh.service', 'no-such.service', 'getty@tty1.service', 'systemd-journald.service'].map(unitState)
    const facts: Fact<unknown>[] = [...files, ...units]
    const conn = await connect(
      inventory.hosts.find((h) => h.name === 'two')!,
      { sshConfigFile: false },
    )
    try {
      const batched = await gatherFacts(conn, facts)
      // One probe per fact: the facts without their batch, so each runs its own command.
      const single = new FactValues()
      for (const f of facts) await gatherFacts(conn, [{ id: f.id, command: f.command, parse: f.parse }], single)
      for (const f of facts) expect(batched.get(f), f.id).toEqual(single.get(f))
      expect(batched.get(files[0]!)).toMatchObject({
        exists: true,
        type: 'file',
        owner: 'nobody',
        group: 'nogroup',
        mode: 0o640,
        sha256: createHash('sha256').update('x').digest('hex'),
      })
      expect(batched.get(files[2]!)).toMatchObject({ type: 'symlink', linkTarget: 'file' })
      expect(batched.get(files[5]!)).toEqual({ exists: false })
      expect(batched.get(files[6]!)).toMatchObject({ type: 'file', sha256: createHash('sha256').update('y').digest('hex') })
      expect(batched.get(units[0]!)).toMatchObject({ loaded: true, active: true, enabled: true })
      expect(batched.get(units[1]!)).toMatchObject({ loaded: false, active: false })
      // The probe ran the batches as one command each: 2 batched commands plus the one unbatchable path.
      expect(probeScript(facts).match(/'@@MP-FACT \d+'/g)).toHaveLength(3)
    } finally {
      await conn.close()
    }
  })

  it('applies every resource kind on two hosts: the hosts change as declared', async () => {
    const r = await apply()
    for (const name of ['one', 'two']) expect(host(r, name).error ?? host(r, name).status).toBe('changed')
    const actions = changesOf(host(r, 'one')).map((c) => `${c.action} ${c.resource}`)
    expect(actions).toEqual(
      expect.arrayContaining([
        `create dir:${ROOT}`,
        `create file:${ROOT}/app.conf`,
        `create symlink:${ROOT}/current`,
        `create line:${ROOT}/lines.conf:key=alpha`,
        'install apt:tree',
        `create file:${UNIT_FILE}`,
        'run command:stamp',
        `start service:${UNIT}`,
      ]),
    )
    const state = await one.exec(
      `stat -c '%n %U:%G %a' ${ROOT} ${ROOT}/app.conf ${ROOT}/private.conf; readlink ${ROOT}/current; cat ${ROOT}/app.conf ${ROOT}/lines.conf; ` +
        `dpkg-query -W -f '\${db:Status-Abbrev}\\n' tree; grep -q '^Name: mp-test/harmless' /var/cache/debconf/config.dat && echo preseeded; test -s ${ROOT}/stamp && echo stamped; ` +
        `systemctl is-enabled ${UNIT}; systemctl is-active ${UNIT}`,
    )
    expect(state.stdout.split('\n')).toEqual([
      `${ROOT} root:root 755`,
      `${ROOT}/app.conf root:root 644`,
      `${ROOT}/private.conf nobody:nogroup 640`,
      'app.conf',
      'greeting=hello',
      'key=alpha',
      'ii ',
      'preseeded',
      'stamped',
      'enabled',
      'active',
      '',
    ])
    // A unit started by this run runs the new file already: no restart on top.
    expect(restartsOf(host(r, 'one'))).toEqual([])
  })

  it('a second apply changes nothing and restarts nothing', async () => {
    const before = await Promise.all([one, two].map(started))
    const r = await apply()
    expect(r.hosts.map((h) => h.error ?? h.status)).toEqual(['ok', 'ok'])
    expect(r.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
    expect(await Promise.all([one, two].map(started))).toEqual(before)
  })

  it("changing the watched file's content restarts the unit exactly once", async () => {
    const [t0, n0] = [await started(one), await startsInJournal(one)]
    desired = { ...desired, greeting: 'bonjour' }
    const r = await apply()
    const h = host(r, 'one')
    expect(h.error ?? h.status).toBe('changed')
    expect(changesOf(h).map((c) => c.resource)).toEqual([`file:${ROOT}/app.conf`])
    expect(restartsOf(h)).toEqual([{ unit: UNIT, action: 'restart', reason: `update ${ROOT}/app.conf (content)`, done: true }])
    expect(await started(one)).not.toBe(t0)
    expect(await startsInJournal(one)).toBe(n0 + 1)
    expect((await one.exec(`cat ${ROOT}/app.conf; cat /var/lib/matrix-provision/pending-restarts`)).stdout).toBe('greeting=bonjour\n')
  })

  it('a dry run of a changed inventory reports every change and changes nothing on the host', async () => {
    const before = await snapshot(one)
    const saved = desired
    desired = { ...desired, greeting: 'hola', key: 'beta', link: 'lines.conf', packages: ['tree', 'bc'] }
    try {
      const r = await apply('dry-run')
      const h = host(r, 'one')
      expect(h.error ?? h.status).toBe('changed')
      expect(changesOf(h).map((c) => `${c.action} ${c.summary}`)).toEqual([
        `update update ${ROOT}/app.conf (content)`,
        `update repoint ${ROOT}/current -> lines.conf (was app.conf)`,
        `update update ${ROOT}/lines.conf (replace the line matching /^key=/ with "key=beta")`,
        'install install bc (debconf preseeded: 1 answers)',
      ])
      expect(changesOf(h)[0]!.diff).toContain('+greeting=hola')
      expect(restartsOf(h)).toEqual([expect.objectContaining({ unit: UNIT, action: 'restart', done: false })])
      expect(await snapshot(one)).toBe(before)
      expect((await one.exec('dpkg -s bc')).exitCode).not.toBe(0)
    } finally {
      desired = saved
    }
  })

  it('the same apply through the sudo user deploy works', async () => {
    const deployInventory = await load(
      await writeTestInventory(
        env,
        [{ name: 'one', roles: ['monitoring'], user: 'deploy' }],
        { serverName: 'example.test' },
        'deploy.yaml',
      ),
    )
    const t0 = await started(one)
    desired = { ...desired, greeting: 'via sudo', key: 'gamma' }
    privileges.length = 0
    const r = await apply('apply', deployInventory)
    expect(privileges).toEqual(['one:sudo'])
    const h = host(r, 'one')
    expect(h.error ?? h.status).toBe('changed')
    expect(restartsOf(h).map((x) => x.unit)).toEqual([UNIT])
    expect(await started(one)).not.toBe(t0)
    const state = await one.exec(`stat -c '%U:%G %a' ${ROOT}/app.conf ${ROOT}/lines.conf; cat ${ROOT}/app.conf ${ROOT}/lines.conf`)
    expect(state.stdout).toBe('root:root 644\nroot:root 644\ngreeting=via sudo\nkey=gamma\n')
    const again = await apply('apply', deployInventory)
    expect(again.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
    // Bring host two to the same state for the tests below.
    expect(host(await apply(), 'two').status).toBe('changed')
  })

  it('a wrong host key in known_hosts is refused: the host fails with the host-key message and nothing ran', async () => {
    const dir = env.dir
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'impostor')])
    const impostor = (await readFile(join(dir, 'impostor.pub'), 'utf8')).split(' ').slice(0, 2).join(' ')
    const knownHosts = join(dir, 'known_hosts.wrong')
    await writeFile(knownHosts, `[${one.sshHost}]:${one.sshPort} ${impostor}\n`)
    const wrong: Inventory = {
      ...inventory,
      hosts: inventory.hosts.filter((h) => h.name === 'one').map((h) => ({ ...h, ssh: { ...h.ssh, knownHostsFile: knownHosts } })),
    }
    const before = await snapshot(one)
    const logins = async () =>
      Number((await one.exec('journalctl --no-pager -o cat _COMM=sshd | grep -c "Accepted publickey" || true')).stdout.trim())
    const loginsBefore = await logins()
    const saved = desired
    desired = { ...desired, greeting: 'must not arrive' }
    try {
      const r = await apply('apply', wrong)
      const h = host(r, 'one')
      expect(h.status).toBe('failed')
      expect(h.error).toMatch(/HOST KEY CHANGED for \[127\.0\.0\.1\]:\d+/)
      expect(h.error).toContain('ssh-keygen -R')
      expect(h.tasks).toEqual([])
    } finally {
      desired = saved
    }
    expect(await snapshot(one)).toBe(before)
    await new Promise((r) => setTimeout(r, 500))
    expect(await logins()).toBe(loginsBefore)
  })

  it("killing one host's SSH session mid-apply fails that host clearly while the other finishes; the next run converges and does the due restart", async () => {
    const t0 = { one: await started(one), two: await started(two) }
    desired = { ...desired, greeting: 'interrupted', slow: 'k1' }
    let killed: Promise<unknown> | undefined
    const r = await apply('apply', inventory, (e) => {
      // 1.5 s into host one's 5 s step: cut every SSH session on that host (sshd's listener stays).
      if (e.host === 'one' && e.message === 'slow step k1' && !killed)
        killed = new Promise((res) => setTimeout(res, 1_500)).then(() => one.exec("pkill -f 'sshd:.*@'"))
    })
    expect(killed).toBeDefined()
    await killed
    const h1 = host(r, 'one')
    const h2 = host(r, 'two')
    expect(h1.status).toBe('failed')
    expect(h1.error).toMatch(/task engine-test failed: slow on one was cut off.*\n?.*connection to one lost/s)
    expect(h2.error ?? h2.status).toBe('changed')
    expect(restartsOf(h2).map((x) => x.unit)).toEqual([UNIT])
    expect(await started(two)).not.toBe(t0.two)
    // On host one the file changed, the restart it needs was recorded on the host, and not done.
    const state = await one.exec(`cat ${ROOT}/app.conf /var/lib/matrix-provision/pending-restarts`)
    expect(state.stdout).toBe(`greeting=interrupted\n${UNIT}\n`)
    expect(await started(one)).toBe(t0.one)

    const next = await apply()
    const n1 = host(next, 'one')
    expect(n1.error ?? n1.status).toBe('changed')
    expect(
      changesOf(n1)
        .map((c) => c.resource)
        .filter((x) => x !== 'command:slow'),
    ).toEqual([])
    expect(restartsOf(n1)).toEqual([expect.objectContaining({ unit: UNIT, action: 'restart', done: true })])
    expect(restartsOf(n1)[0]?.reason).toContain('pending from an earlier run')
    expect(await started(one)).not.toBe(t0.one)
    expect((await one.exec('cat /var/lib/matrix-provision/pending-restarts')).stdout).toBe('')
    const last = await apply()
    expect(last.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
  })
})
