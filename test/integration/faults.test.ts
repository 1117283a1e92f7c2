import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { hostname, userInfo } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest'
import { stringify } from 'yaml'
import type { HostReport, RunReport } from '../../src/engine/report-types.js'
import { runInventory } from '../../src/engine/run.js'
import type { Task } from '../../src/engine/task.js'
import { loadInventory } from '../../src/inventory/load.js'
import type { Inventory, Role } from '../../src/inventory/types.js'
import { aptPackages } from '../../src/resources/apt-packages.js'
import { command } from '../../src/resources/command.js'
import { file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/core/shell.js'
import { connect } from '../../src/ssh/connect.js'
import { enabled } from '../../tasks/apache/index.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { sleep, until } from '../support/wait.js'
import { jsonReport } from '../support/cli.js'

const run = promisify(execFile)

const ROLES: Role[] = ['postgres', 'redis', 'apache']
const VARS = { serverName: 'web.test', redis: { password: { env: 'REDIS_PASSWORD' } } }
const REDIS_PASSWORD = 'redis-env-secret-4f1b9c2e7a'
const ENV = { ...process.env, REDIS_PASSWORD }
const TEST_ROLE = 'fault-test' as Role
const STATE = '/var/lib/matrix-provision'

/** What the fault-injection task declares; each test sets what it needs. */
interface Desired {
  /** Apache conf files under conf-available, enabled, with apache2 reloaded after `apache2ctl configtest`. */
  apacheConf: Record<string, string>
  packages: string[]
  /** One Apache conf written twice in the same run (first, then `then`), after apacheConf. */
  rewrite?: { name: string; first: string; then: string }
  /** A guarded command that takes `seconds` (runs until its marker exists). */
  slow?: { marker: string; seconds: number }
}
let desired: Desired = { apacheConf: {}, packages: [] }

const task: Task = {
  name: TEST_ROLE,
  title: 'fault injection',
  resources() {
    const out: Resource[] = []
    for (const [name, content] of Object.entries(desired.apacheConf)) {
      const path = `/etc/apache2/conf-available/${name}.conf`
      out.push(file({ path, content }), enabled(path))
    }
    if (desired.rewrite) {
      const path = `/etc/apache2/conf-available/${desired.rewrite.name}.conf`
      out.push(file({ path, content: desired.rewrite.first }), enabled(path), file({ path, content: desired.rewrite.then }))
    }
    if (desired.packages.length) out.push(aptPackages({ packages: desired.packages }))
    const slow = desired.slow
    if (slow)
      out.push(
        command({
          name: 'slow',
          summary: `slow step ${slow.marker}`,
          unless: sh`test -e ${`/root/slow-${slow.marker}`}`,
          command: sh`sleep ${slow.seconds} && touch ${`/root/slow-${slow.marker}`}`,
        }),
      )
    // The same mechanism the apache task uses: reload on change, validated first.
    if (Object.keys(desired.apacheConf).length || desired.rewrite)
      out.push(service({ unit: 'apache2.service', watch: ['/etc/apache2/'], reload: true, validate: sh`apache2ctl configtest` }))
    return out
  },
}

/** Faults injected on one real host running Postgres, Redis and Apache (plus fake hosts for connection faults). */
describe.skipIf(!inject('docker'))('faults on a real host', () => {
  let env: TestHosts
  let web: TestHost
  let inventory: string
  let taskInventory: Inventory

  async function writeInventory(): Promise<void> {
    inventory = await writeTestInventory(env, [{ name: 'web', roles: ROLES }], VARS)
    const inv = await loadInventory(inventory, ENV)
    taskInventory = { ...inv, hosts: inv.hosts.map((h) => ({ ...h, roles: [TEST_ROLE], ssh: { ...h.ssh, keepaliveIntervalMs: 2_000 } })) }
  }

  /** The fault task through the engine (not the CLI): `onEvent` sees each change as it starts. */
  const runTask = (onEvent?: (message: string) => void): Promise<RunReport> =>
    runInventory(taskInventory, {
      mode: 'apply',
      tasks: [task],
      parallel: 1,
      connect: (h) => connect(h, { sshConfigFile: false }),
      onEvent: (e) => onEvent?.(e.message),
    })

  /** Resolves when the task reaches the slow step (then `after` ms more), running `then` at that moment. */
  function whenSlow(after: number, then: () => Promise<unknown>) {
    let fired: Promise<unknown> | undefined
    return {
      onEvent: (message: string) => {
        if (message.startsWith('slow step') && !fired) fired = sleep(after).then(then)
      },
      fired: () => fired,
    }
  }

  const webReport = (r: RunReport): HostReport => r.hosts[0]!
  /** The messages each injected fault produced, printed at the end (for the notes). */
  const seen: string[] = []
  const note = (fault: string, message: string | undefined) => seen.push(`${fault}: ${(message ?? '').split('\n').slice(0, 3).join(' | ')}`)
  const httpStatus = async () => (await web.exec("curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1/")).stdout

  beforeAll(async () => {
    env = await startHosts(['web'])
    web = env.get('web')
    await writeInventory()
  })
  afterAll(async () => {
    console.log(`faults injected (${seen.length}):\n  ${seen.join('\n  ')}`)
    await env?.stop()
  })

  it('secrets: no secret value reaches stdout, stderr, the log file, --json, a --diff dry run, or a command line on the host; secret files are 0600 root', async () => {
    // Sample every command line on the host while the runs go on.
    await web.exec("systemd-run --unit mp-ps-sampler sh -c 'while :; do ps -eo args >> /root/ps.log; sleep 0.02; done'")
    const outputs: string[] = []
    const logs = [join(env.dir, 'run1.log'), join(env.dir, 'run2.log'), join(env.dir, 'dry.log')]
    const first = await provision(['--inventory', inventory, '--verbose', '--log-file', logs[0]!], ENV)
    outputs.push(first.stdout, first.stderr)
    expect(first.code, first.stdout + first.stderr).toBe(0)
    expect(first.stderr).toContain('[web] | ') // --verbose did echo command output
    const second = await provision(['--inventory', inventory, '--json', '--verbose', '--log-file', logs[1]!], ENV)
    outputs.push(second.stdout, second.stderr)
    expect(second.code).toBe(0)
    expect(jsonReport(second.stdout).totals).toMatchObject({ add: 0, change: 0, restart: 0 })
    // A new run process (fresh module registry: it knows no secret value of the runs above) plans a
    // password rotation with diffs: the old password is only in the file on the host.
    const rotated = 'redis-rotated-secret-93be1d07'
    vi.resetModules()
    const dry = await provision(['--inventory', inventory, '--dry-run', '--diff', '--verbose', '--log-file', logs[2]!], {
      ...ENV,
      REDIS_PASSWORD: rotated,
    })
    outputs.push(dry.stdout, dry.stderr)
    expect(dry.code).toBe(0)
    expect(dry.stdout).toMatch(/~ update \/etc\/redis\/redis.conf \(content\)/)
    // Both sides masked (the old value by its directive name, as the run does not know it).
    expect(dry.stdout).toContain('(a masked value changed in /etc/redis/redis.conf)')
    await web.exec('systemctl stop mp-ps-sampler')

    const stored = await web.exec(`for f in ${STATE}/secrets/*; do printf '%s\\t' "\${f##*/}"; base64 -w0 "$f"; echo; done`)
    const secrets = new Map<string, string>([
      ['env REDIS_PASSWORD', REDIS_PASSWORD],
      ['env REDIS_PASSWORD (rotated)', rotated],
    ])
    for (const line of stored.stdout.trim().split('\n')) {
      const [name, b64] = line.split('\t')
      secrets.set(`generated ${name}`, Buffer.from(b64!, 'base64').toString('utf8'))
    }
    expect([...secrets.keys()]).toEqual(['env REDIS_PASSWORD', 'env REDIS_PASSWORD (rotated)', 'generated postgres-password'])
    const ps = (await web.exec('cat /root/ps.log')).stdout
    expect(ps).toMatch(/apt-get .*install/) // the sampler saw the run
    const texts: Record<string, string> = {
      'CLI output': outputs.join('\n'),
      'log files': (await Promise.all(logs.map((f) => readFile(f, 'utf8')))).join('\n'),
      'command lines on the host': ps,
    }
    expect(texts['log files']).toContain('"command"')
    const leaks: string[] = []
    for (const [secretName, value] of secrets) {
      expect(value.length).toBeGreaterThanOrEqual(16)
      // The value itself and its base64 form (how a file's bytes travel in a probe).
      for (const form of [value, Buffer.from(value).toString('base64')]) {
        for (const [where, text] of Object.entries(texts))
          if (text.includes(form)) leaks.push(`${secretName} in ${where}${form === value ? '' : ' (base64)'}`)
      }
    }
    expect(leaks).toEqual([])
    const modes = await web.exec(`stat -c '%n %U:%G %a' ${STATE} ${STATE}/secrets ${STATE}/secrets/*`)
    expect(modes.stdout.trim().split('\n')).toEqual([
      `${STATE} root:root 700`,
      `${STATE}/secrets root:root 700`,
      `${STATE}/secrets/postgres-password root:root 600`,
    ])
    console.log(
      `secrets scanned: ${[...secrets.keys()].join(', ')} (raw and base64) in ${Object.keys(texts).join(', ')} (${ps.split('\n').length} ps lines)`,
    )
  })

  it("an Apache change that fails configtest: the run fails with Apache's error, the previous files are back, Apache keeps serving, no restart stays pending", async () => {
    desired = { apacheConf: { 'mp-fault': 'ServerSignature Off\n' }, packages: [] }
    const good = await runTask()
    expect(webReport(good).error ?? webReport(good).status).toBe('changed')
    expect(webReport(good).tasks[0]!.restarts.map((r) => `${r.action} ${r.unit}`)).toEqual(['reload apache2.service'])
    const before = (await web.exec('systemctl show -p MainPID,ActiveEnterTimestampMonotonic apache2')).stdout
    expect(await httpStatus()).toMatch(/^(200|301|302)$/)

    // 1. An existing file gets a bad directive.
    desired = { apacheConf: { 'mp-fault': 'ThisIsNotADirective on\n' }, packages: [] }
    const bad = await runTask()
    expect(webReport(bad).status).toBe('failed')
    expect(webReport(bad).error).toContain("Invalid command 'ThisIsNotADirective'")
    expect(webReport(bad).error).toContain(
      'apache2.service: the new configuration failed validation (apache2ctl configtest); restored the previous files (/etc/apache2/conf-available/mp-fault.conf)',
    )
    expect((await web.exec('cat /etc/apache2/conf-available/mp-fault.conf')).stdout).toBe('ServerSignature Off\n')
    note('Apache configtest fails (changed file)', webReport(bad).error)

    // 2. A new file (and its new conf-enabled link) that is bad from the start.
    desired = { apacheConf: { 'mp-fault': 'ServerSignature Off\n', 'mp-fault-new': '<VirtualHost *:80>\n' }, packages: [] }
    const badNew = await runTask()
    expect(webReport(badNew).status).toBe('failed')
    expect(webReport(badNew).error).toMatch(/<VirtualHost> was not closed|Syntax error/)
    note('Apache configtest fails (new file + link)', webReport(badNew).error)
    const leftovers = await web.exec(
      'ls -A /etc/apache2/conf-available/ /etc/apache2/conf-enabled/ | grep mp-fault-new; apache2ctl configtest 2>&1',
    )
    expect(leftovers.stdout).not.toContain('mp-fault-new')
    expect(leftovers.stdout).toContain('Syntax OK')

    // 3. One file written twice before validation (good, then bad): restored to what it was before the run.
    desired = { apacheConf: {}, rewrite: { name: 'mp-fault', first: 'ServerTokens Prod\n', then: 'AlsoNotADirective on\n' }, packages: [] }
    const twice = await runTask()
    expect(webReport(twice).error).toContain("Invalid command 'AlsoNotADirective'")
    expect((await web.exec('cat /etc/apache2/conf-available/mp-fault.conf')).stdout).toBe('ServerSignature Off\n')

    expect((await web.exec('systemctl show -p MainPID,ActiveEnterTimestampMonotonic apache2')).stdout).toBe(before)
    expect((await web.exec('systemctl is-active apache2')).stdout.trim()).toBe('active')
    expect(await httpStatus()).toMatch(/^(200|301|302)$/)
    expect((await web.exec(`cat ${STATE}/pending-restarts`)).stdout).toBe('')
    // Back to the good configuration: nothing to change, nothing to restart (no loop of pending reloads).
    desired = { apacheConf: { 'mp-fault': 'ServerSignature Off\n' }, packages: [] }
    const after = await runTask()
    expect(webReport(after).error ?? webReport(after).status).toBe('ok')
    expect(after.totals).toMatchObject({ add: 0, change: 0, restart: 0 })
    const cli = await provision(['--inventory', inventory], ENV)
    expect(cli.code, cli.stdout).toBe(0)
    expect(cli.stdout).toContain('web: no changes')
  })

  it('a reload left pending by a run that died after writing a rejected Apache file: the next run restores the file from that run\'s backup and fails; without a backup the reload stays pending and every run fails, never "no changes"', async () => {
    const conf = '/etc/apache2/conf-available/mp-inherit.conf'
    // Apache is there from the tests above; installing it here lets this test run alone (-t) too.
    desired = { apacheConf: {}, packages: ['apache2'] }
    expect(webReport(await runTask()).error).toBeUndefined()
    desired = { apacheConf: { 'mp-inherit': 'ServerSignature Off\n' }, packages: [] }
    expect(webReport(await runTask()).error ?? 'ok').toBe('ok')
    // The run writes a rejected file, then dies in a slow step before Apache is validated and reloaded.
    desired = { apacheConf: { 'mp-inherit': 'InheritedBadDirective on\n' }, packages: [], slow: { marker: 'inherit', seconds: 5 } }
    const trigger = whenSlow(1_500, () => web.exec("pkill -f 'sshd:.*@'"))
    const died = await runTask(trigger.onEvent)
    await trigger.fired()
    expect(webReport(died).status).toBe('failed')
    expect((await web.exec(`cat ${conf}; cat ${STATE}/pending-restarts`)).stdout).toBe('InheritedBadDirective on\napache2.service\n')

    // Same inventory again: the rejected file is on disk already (nothing to write), the reload is due.
    const next = await runTask()
    expect(webReport(next).status).toBe('failed')
    expect(webReport(next).error).toContain(
      `apache2.service: the new configuration failed validation (apache2ctl configtest); restored the previous files (${conf}`,
    )
    note("inherited reload, rejected, restored from the dead run's backup", webReport(next).error)
    expect((await web.exec(`cat ${conf}`)).stdout).toBe('ServerSignature Off\n')
    expect((await web.exec(`cat ${STATE}/pending-restarts; ls -A ${STATE}/backup 2>&1`)).stdout).toMatch(
      /^ls: cannot access .*No such file or directory\n$/,
    )
    // The inventory still asks for the rejected file: every run writes it and fails; none says "no changes".
    const third = await runTask()
    expect(webReport(third).status).toBe('failed')
    expect((await web.exec(`cat ${conf}`)).stdout).toBe('ServerSignature Off\n')

    // As a run of an older version (or one that lost its backups) leaves it: the file and the pending entry, no backup.
    await web.exec(
      `printf 'InheritedBadDirective on\\n' > ${conf} && rm -rf ${STATE}/backup && echo apache2.service > ${STATE}/pending-restarts`,
    )
    desired = { apacheConf: { 'mp-inherit': 'InheritedBadDirective on\n' }, packages: [] }
    for (const attempt of [1, 2]) {
      const r = await runTask()
      expect(webReport(r).status, `attempt ${attempt}`).toBe('failed')
      expect(webReport(r).error).toContain(
        'apache2.service: the configuration on the host fails validation (apache2ctl configtest) and no earlier version of its files is kept to restore; left apache2.service running as it was, with its reload pending',
      )
      expect((await web.exec(`cat ${STATE}/pending-restarts`)).stdout).toBe('apache2.service\n')
      if (attempt === 1) note('inherited reload, rejected, nothing to restore', webReport(r).error)
    }
    expect((await web.exec('systemctl is-active apache2')).stdout.trim()).toBe('active')
    // Fixed in the inventory: written, validated, reloaded, nothing pending, no backup kept.
    desired = { apacheConf: { 'mp-inherit': 'ServerSignature Off\n' }, packages: [] }
    const fixed = await runTask()
    expect(webReport(fixed).error ?? webReport(fixed).status).toBe('changed')
    expect(webReport(fixed).tasks[0]!.restarts.map((r) => `${r.action} ${r.unit}`)).toEqual(['reload apache2.service'])
    expect((await web.exec(`cat ${STATE}/pending-restarts; ls -A ${STATE}/backup 2>&1`)).stdout).toMatch(
      /^ls: cannot access .*No such file or directory\n$/,
    )
    desired = { apacheConf: {}, packages: [] }
  })

  it('the SSH connection cut while a package installs: that host fails clearly; the next run finishes the install and converges', async () => {
    desired = { apacheConf: {}, packages: ['gcc'] }
    let cut: Promise<unknown> | undefined
    const r = await runTask((message) => {
      if (message.startsWith('install gcc') && !cut) cut = sleep(2_500).then(() => web.exec("pkill -f 'sshd:.*@'"))
    })
    await cut
    const h = webReport(r)
    expect(h.status).toBe('failed')
    expect(h.error).toMatch(/cut off|connection to web lost/)
    note('connection cut during apt-get install', h.error)
    const again = await runTask()
    expect(webReport(again).error ?? webReport(again).status).toMatch(/changed|ok/)
    expect((await web.exec("dpkg-query -W -f '${db:Status-Abbrev}' gcc")).stdout).toBe('ii ')
    expect((await web.exec('dpkg --audit')).stdout.trim()).toBe('')
    const third = await runTask()
    expect(webReport(third).status).toBe('ok')
  })

  it('the dpkg lock held by another process: the install waits for it; a holder that stays past the bound fails the run naming it', async () => {
    const holdLock = async (name: string, seconds: number) => {
      await web.exec(
        `systemd-run --unit ${name} python3 -c "import fcntl,time; f=open('/var/lib/dpkg/lock-frontend','a'); fcntl.lockf(f, fcntl.LOCK_EX); open('/run/${name}','w').close(); time.sleep(${seconds}); open('/run/${name}.end','w').write(str(int(time.time())))"`,
      )
      await until(`${name} holding the dpkg lock`, async () => (await web.exec(`test -e /run/${name}`)).exitCode === 0, {
        timeoutMs: 60_000,
        intervalMs: 100,
      })
      return (await web.exec(`systemctl show -p MainPID --value ${name}`)).stdout.trim()
    }
    desired = { apacheConf: {}, packages: ['tree'] }
    await holdLock('mp-dpkg-holder-1', 5)
    const t0 = Date.now()
    const waited = await runTask()
    expect(webReport(waited).error ?? webReport(waited).status).toBe('changed')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3_500)
    expect((await web.exec("dpkg-query -W -f '${db:Status-Abbrev}' tree")).stdout).toBe('ii ')
    // dpkg installed tree only once the holder had let go (dpkg.log has whole seconds).
    const times = await web.exec(
      `cat /run/mp-dpkg-holder-1.end; echo; date -d "$(grep ' status installed tree:' /var/log/dpkg.log | tail -1 | cut -d' ' -f1,2)" +%s`,
    )
    const [released, installed] = times.stdout.trim().split('\n').map(Number)
    expect(installed).toBeGreaterThanOrEqual(released!)

    desired = { apacheConf: {}, packages: ['bc'] }
    const pid = await holdLock('mp-dpkg-holder-2', 120)
    process.env.MP_DPKG_LOCK_TIMEOUT = '3'
    try {
      const t1 = Date.now()
      const failed = await runTask()
      expect(Date.now() - t1).toBeLessThan(30_000)
      const h = webReport(failed)
      expect(h.status).toBe('failed')
      expect(h.error).toContain('the dpkg lock stayed held for 3 s by another process')
      expect(h.error).toContain(`(It is held by process ${pid} (python3))`)
      expect(h.error).toMatch(new RegExp(`\\n${pid} /usr/bin/python3 -c import fcntl`))
      note('dpkg lock held past the bound', h.error)
      expect((await web.exec('dpkg -s bc')).exitCode).not.toBe(0)
    } finally {
      delete process.env.MP_DPKG_LOCK_TIMEOUT
      await web.exec('systemctl stop mp-dpkg-holder-2')
    }
    const retried = await runTask()
    expect(webReport(retried).error ?? webReport(retried).status).toBe('changed')
  })

  it('two runs at once: the second stops at once naming the holder; after the first, a run proceeds', async () => {
    desired = { apacheConf: {}, packages: [], slow: { marker: 'lock-1', seconds: 4 } }
    let second: { code: number; stdout: string; stderr: string; ms: number } | undefined
    const trigger = whenSlow(0, async () => {
      const t0 = Date.now()
      const r = await provision(['--inventory', inventory], ENV)
      second = { ...r, ms: Date.now() - t0 }
    })
    const first = await runTask(trigger.onEvent)
    await trigger.fired()
    expect(webReport(first).error ?? webReport(first).status).toBe('changed')
    expect(second!.code).toBe(1)
    expect(second!.ms).toBeLessThan(3_000)
    expect(second!.stdout).toMatch(
      new RegExp(`web is locked by another run: [0-9a-f]{12} ${userInfo().username}@${hostname()} pid ${process.pid} since `),
    )
    expect(second!.stdout).toMatch(/provision unlock --inventory <file> --limit web --holder [0-9a-f]{12}/)
    note(
      `second run at once (stopped after ${second!.ms} ms)`,
      second!.stdout.split('\n').find((l) => l.includes('locked')),
    )
    const third = await provision(['--inventory', inventory], ENV)
    expect(third.code, third.stdout).toBe(0)
  })

  it('a run whose connection is killed while it holds the lock leaves no lock behind', async () => {
    desired = { apacheConf: {}, packages: [], slow: { marker: 'lock-2', seconds: 4 } }
    const trigger = whenSlow(1_000, () => web.exec("pkill -f 'sshd:.*@'"))
    const killed = await runTask(trigger.onEvent)
    await trigger.fired()
    expect(webReport(killed).status).toBe('failed')
    expect(webReport(killed).error).toMatch(/cut off|connection to web lost/)
    note('connection killed while holding the lock', webReport(killed).error)
    const next = await provision(['--inventory', inventory], ENV)
    expect(next.code, next.stdout).toBe(0)
  })

  it('provision unlock clears a stuck holder of the lock, named by the id the lock message printed', async () => {
    // A holder whose connection never closes: the lock script of src/engine/lock.ts with an endless stdin.
    const script = `mkdir -p ${STATE} && exec 9>>${STATE}/lock && flock -n 9 && printf '%s (remote pid %s)\\n' '0123456789ab stuck@elsewhere pid 4242' "$$" > ${STATE}/lock.holder && echo MP-LOCKED && exec cat >/dev/null`
    await web.container.copyContentToContainer([{ content: script + '\n', target: '/root/stuck-holder.sh' }])
    await web.exec("systemd-run --unit mp-stuck-holder sh -c 'sleep 600 | sh /root/stuck-holder.sh'")
    await until(
      'the stuck holder taking the host lock',
      async () => (await web.exec(`cat ${STATE}/lock.holder`)).stdout.includes('stuck@elsewhere'),
      { timeoutMs: 60_000, intervalMs: 100 },
    )
    const blocked = await provision(['--inventory', inventory], ENV)
    expect(blocked.code).toBe(1)
    expect(blocked.stdout).toContain('web is locked by another run: 0123456789ab stuck@elsewhere pid 4242')
    expect(blocked.stdout).toContain('provision unlock --inventory <file> --limit web --holder 0123456789ab')
    const wrong = await provision(['unlock', '--inventory', inventory, '--limit', 'web', '--holder', 'ba9876543210'], ENV)
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toContain('nothing was killed')
    expect((await web.exec('systemctl is-active mp-stuck-holder')).stdout.trim()).toBe('active')
    const unlock = await provision(['unlock', '--inventory', inventory, '--limit', 'web', '--holder', '0123456789ab'], ENV)
    expect(unlock.code, unlock.stderr).toBe(0)
    expect(unlock.stdout).toMatch(/^web: cleared: 0123456789ab stuck@elsewhere pid 4242 \(remote pid \d+\)\n$/)
    note(
      'stuck lock holder',
      `${blocked.stdout
        .split('\n')
        .find((l) => l.includes('locked'))
        ?.trim()} -> unlock: ${unlock.stdout.trim()}`,
    )
    const after = await provision(['--inventory', inventory], ENV)
    expect(after.code, after.stdout).toBe(0)
    const again = await provision(['unlock', '--inventory', inventory, '--limit', 'web', '--holder', '0123456789ab'], ENV)
    expect(again.stdout).toBe('web: not held\n')
    await web.exec('systemctl stop mp-stuck-holder')
  })

  it('an unreachable host and wrong credentials fail those hosts alone, each saying what to do; the other host succeeds; exit 1', async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number }
        s.close(() => resolve(port))
      })
    })
    const strangerKey = join(env.dir, 'stranger')
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', strangerKey])
    const doc = {
      defaults: {
        ssh: { identityFile: env.keyFile, knownHostsFile: env.knownHostsFile, hostKeyPolicy: 'strict', connectTimeout: 10 },
        vars: VARS,
      },
      hosts: {
        web: { address: web.sshHost, privateAddress: web.ip, ssh: { port: web.sshPort }, roles: ROLES },
        gone: { address: '127.0.0.1', ssh: { port: closedPort }, roles: ['apache'] },
        stranger: { address: web.sshHost, ssh: { port: web.sshPort, identityFile: strangerKey }, roles: ['apache'] },
      },
    }
    const file3 = join(env.dir, 'three.yaml')
    await writeFile(file3, stringify(doc))
    const r = await provision(['--inventory', file3], ENV)
    expect(r.code).toBe(1)
    expect(r.stdout).toContain('web: no changes')
    expect(r.stdout).toMatch(
      /gone FAILED\n\s+✗ cannot connect to root@\[127\.0\.0\.1\]:\d+ \(gone\): .*nothing accepts connections on port \d+: is sshd running, and is ssh\.port right\?/,
    )
    expect(r.stdout).toMatch(
      new RegExp(
        `stranger FAILED\\n\\s+✗ root@\\[127\\.0\\.0\\.1\\]:${web.sshPort} \\(stranger\\) refused our credentials \\(key ${strangerKey.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\): check that the public key is in ~root/\\.ssh/authorized_keys`,
      ),
    )
    expect(r.stdout).toMatch(/web\s+ok .*\n\s+gone\s+failed.*\n\s+stranger\s+failed/)
    for (const name of ['gone', 'stranger'])
      note(
        name === 'gone' ? 'unreachable host' : 'wrong credentials',
        r.stdout.split('\n')[r.stdout.split('\n').findIndex((l) => l.startsWith(`${name} FAILED`)) + 1]?.trim(),
      )
  })

  it('a host restarted in the middle of a run fails that host clearly; once it is back, the next run converges', async () => {
    desired = { apacheConf: {}, packages: [], slow: { marker: 'reboot', seconds: 4 } }
    const trigger = whenSlow(1_000, () => web.container.restart())
    const t0 = Date.now()
    const cut = await runTask(trigger.onEvent)
    await trigger.fired()
    expect(webReport(cut).status).toBe('failed')
    expect(webReport(cut).error).toMatch(/task fault-test failed: slow on web was cut off.*connection to web lost/s)
    expect(Date.now() - t0).toBeLessThan(30_000)
    note('host restarted mid-run', webReport(cut).error)
    const boot = await web.exec('systemctl is-system-running --wait')
    expect(boot.stdout.trim()).toBe('running')
    // The mapped SSH port may change with the restart: rewrite known_hosts and the inventory.
    ;(web as { sshPort: number }).sshPort = web.container.getMappedPort(22)
    const keys = await web.exec('cat /etc/ssh/ssh_host_*_key.pub')
    await writeFile(
      env.knownHostsFile,
      keys.stdout
        .trim()
        .split('\n')
        .map((k) => `[${web.sshHost}]:${web.sshPort} ${k.split(' ').slice(0, 2).join(' ')}`)
        .join('\n') + '\n',
    )
    await writeInventory()
    const next = await runTask()
    expect(webReport(next).error ?? webReport(next).status).toBe('changed')
    expect(webReport(next).tasks[0]!.changes.map((c) => c.resource)).toEqual(['command:slow'])
    const cli = await provision(['--inventory', inventory], ENV)
    expect(cli.code, cli.stdout).toBe(0)
    expect(cli.stdout).toContain('web: no changes')
  })
})

/** (b) A Synapse configuration that Synapse itself rejects: caught by its parser before any restart. */
describe.skipIf(!inject('docker'))('faults: a Synapse configuration Synapse rejects', () => {
  let env: TestHosts
  let hs: TestHost
  let synapseVars: Record<string, unknown>
  const write = (extraConfig: Record<string, unknown>, file: string) =>
    writeTestInventory(
      env,
      [{ name: 'hs', roles: ['postgres', 'synapse'] }],
      { ...synapseVars, synapse: { ...(synapseVars.synapse as object), extraConfig } },
      file,
    )
  const state = async () =>
    (
      await hs.exec(
        'systemctl show -p MainPID,ActiveEnterTimestampMonotonic matrix-synapse; curl -sf --max-time 5 http://127.0.0.1:8008/health',
      )
    ).stdout

  beforeAll(async () => {
    const { pipSynapseVars, synapseWheelhouse } = await import('../support/artifacts.js')
    const [wheelhouse, hosts] = await Promise.all([synapseWheelhouse('3.11'), startHosts(['hs'])])
    env = hosts
    hs = env.get('hs')
    synapseVars = { serverName: 'hs.test', synapse: pipSynapseVars(wheelhouse) }
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('is found before any restart: the run fails naming the error, Synapse keeps running its old configuration', async () => {
    const good = await write({ caches: { global_factor: 2 } }, 'good.yaml')
    const first = await provision(['--inventory', good])
    expect(first.code, first.stdout + first.stderr).toBe(0)
    const before = await state()
    expect(before).toMatch(/MainPID=[1-9]\d*\nActiveEnterTimestampMonotonic=[1-9]\d*\nOK$/)
    const extraBefore = (await hs.exec('cat /etc/matrix-synapse/conf.d/90-extra.yaml')).stdout

    // Synapse's CacheConfig raises ConfigError("caches.global_factor must be a number.").
    const bad = await provision(['--inventory', await write({ caches: { global_factor: 'banana' } }, 'bad.yaml')])
    expect(bad.code).toBe(1)
    expect(bad.stdout).toContain('matrix-synapse.service: the new configuration failed validation')
    expect(bad.stdout).toContain('caches.global_factor must be a number')
    console.log(
      `Synapse fault: ${bad.stdout
        .split('\n')
        .filter((l) => /global_factor/.test(l))
        .join(' | ')
        .trim()}`,
    )
    expect(await state()).toBe(before)
    expect((await hs.exec('cat /etc/matrix-synapse/conf.d/90-extra.yaml')).stdout).toBe(extraBefore)
    expect((await hs.exec('cat /var/lib/matrix-provision/pending-restarts')).stdout).toBe('')

    const again = await provision(['--inventory', good])
    expect(again.code, again.stdout).toBe(0)
    expect(again.stdout).toContain('hs: no changes')
    expect(await state()).toBe(before)
  })
})
