import { readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { parse, stringify } from 'yaml'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { cliOutput, runCli, type CliResult } from '../support/cli.js'
import { writeTestInventory } from '../support/inventory.js'
import { until } from '../support/wait.js'

const PASSWORD = 'cli-redis-Pw-5f0c2e9b71'
const ENV = { ...process.env, CLI_REDIS_PASSWORD: PASSWORD }
const STATE = '/var/lib/matrix-provision'

const cli = (args: string[]) => runCli(args, { env: ENV })
/** Nothing the CLI prints or logs may hold the password. */
const leaks = (r: CliResult, ...more: string[]) => [r.stdout, r.stderr, ...more].filter((t) => t.includes(PASSWORD)).length

function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/**
 * Every flag and subcommand of the README, through bin/provision.js (the bundle users run), against one
 * real host (Redis with a password from the environment) shared by the whole file. `sandbox` is covered
 * by test/e2e/installed-package.test.ts (the packed package's bin); --help, --version and schema by test/unit/cli-bin.test.ts.
 */
describe.skipIf(!inject('docker'))('the CLI as users run it (bin/provision.js) on a real host', () => {
  let env: TestHosts
  let host: TestHost
  let inventory: string
  /** The same host plus `gone`, whose SSH port is closed: --limit and --parallel have something to choose. */
  let twoHosts: string
  const started = Date.now()

  beforeAll(async () => {
    env = await startHosts(['cli1'])
    host = env.get('cli1')
    inventory = await writeTestInventory(env, [{ name: 'cli1', roles: ['redis'] }], {
      serverName: 'cli.test',
      redis: { password: { env: 'CLI_REDIS_PASSWORD' } },
    })
    const doc = parse(await readFile(inventory, 'utf8')) as { hosts: Record<string, unknown> }
    doc.hosts.gone = { address: '127.0.0.1', ssh: { port: await closedPort(), connectTimeout: 5 }, roles: ['redis'] }
    twoHosts = join(env.dir, 'two-hosts.yaml')
    await writeFile(twoHosts, stringify(doc))
  })
  afterAll(async () => {
    await env?.stop()
    console.log(`cli.test.ts: ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })

  it('-n --exit-code --diff on the fresh host: the plan with diffs, the password masked, exit 10, nothing changed', async () => {
    const before = (await host.exec('ls /etc/redis 2>&1; ls /var/lib/matrix-provision 2>&1')).output
    const r = await cli(['-i', inventory, '-n', '--exit-code', '--diff'])
    expect(r.code, cliOutput(r)).toBe(10)
    expect(r.stdout).toContain('redis-server')
    expect(r.stdout).toContain('+++ /etc/redis/redis.conf')
    expect(r.stdout).toMatch(/requirepass "?\*{8}/)
    expect(r.stdout).toMatch(/Plan: \d+ to add/)
    expect(leaks(r)).toBe(0)
    expect((await host.exec('ls /etc/redis 2>&1; ls /var/lib/matrix-provision 2>&1')).output).toBe(before)
  })

  it('--tasks picks tasks: only postgres on a Redis host plans nothing (exit 0 with --exit-code)', async () => {
    const r = await cli(['--inventory', inventory, '--dry-run', '--exit-code', '--tasks', 'postgres'])
    expect(r.code, cliOutput(r)).toBe(0)
    expect(r.stdout).toContain('Plan: no changes.')
  })

  it('--dry-run --json prints one JSON report of the plan', async () => {
    const r = await cli(['--inventory', inventory, '--dry-run', '--json'])
    expect(r.code, cliOutput(r)).toBe(0)
    const report = JSON.parse(r.stdout) as { mode: string; hosts: { host: string; status: string }[]; totals: { add: number } }
    expect(report.mode).toBe('dry-run')
    expect(report.hosts.map((h) => h.host)).toEqual(['cli1'])
    expect(report.totals.add).toBeGreaterThan(0)
    expect(leaks(r)).toBe(0)
  })

  it('apply -l -t -v -p --log-file over two hosts applies to the one chosen: live output on stderr, every command in the log, nothing secret', async () => {
    const log = join(env.dir, 'apply.log')
    const r = await cli(['apply', '-i', twoHosts, '-l', 'cli1', '-t', 'redis', '-v', '-p', '1', '--log-file', log])
    expect(r.code, cliOutput(r)).toBe(0)
    expect(r.stderr).toMatch(/^\[cli1\] \| /m)
    expect(r.stdout + r.stderr).not.toContain('gone')
    const text = await readFile(log, 'utf8')
    const events = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; host?: string; command?: string; code?: number; durationMs?: number })
    const commands = events.filter((e) => e.command !== undefined && e.msg === 'command finished')
    expect(commands.length).toBeGreaterThan(3)
    expect(commands.every((e) => e.host === 'cli1' && typeof e.durationMs === 'number' && typeof e.code === 'number')).toBe(true)
    expect(commands.some((e) => e.code === 0)).toBe(true)
    expect(events.at(-1)?.msg).toBe('run finished')
    expect(leaks(r, text)).toBe(0)
    expect((await host.exec('redis-cli -p 32992 --no-auth-warning -a ' + PASSWORD + ' ping')).stdout).toContain('PONG')
  })

  it('converged, -v --dry-run --exit-code --log-file: exit 0; neither the password nor a digest of its file is printed or logged', async () => {
    const log = join(env.dir, 'converged.log')
    const r = await cli(['-i', inventory, '-v', '--dry-run', '--exit-code', '--log-file', log])
    expect(r.code, cliOutput(r)).toBe(0)
    expect(r.stdout).toContain('Plan: no changes.')
    const text = await readFile(log, 'utf8')
    // An unsalted SHA-256 of a file that holds a chosen password can be guessed offline.
    const digest = (await host.exec('sha256sum /etc/redis/redis.conf')).stdout.split(' ')[0]!
    expect(digest).toMatch(/^[0-9a-f]{64}$/)
    for (const out of [r.stdout, r.stderr, text]) expect(out).not.toContain(digest)
    expect(leaks(r, text)).toBe(0)
  })

  it('check runs the checks read-only and exits 0 on the converged host', async () => {
    const r = await cli(['check', '--inventory', inventory])
    expect(r.code, cliOutput(r)).toBe(0)
    expect(leaks(r)).toBe(0)
  })

  it('without --limit, an unreachable host fails alone: exit 1, the other host is reported unchanged (--json, --parallel 1)', async () => {
    const r = await cli(['--inventory', twoHosts, '--json', '--parallel', '1'])
    expect(r.code, cliOutput(r)).toBe(1)
    const report = JSON.parse(r.stdout) as { hosts: { host: string; status: string; error?: string }[] }
    expect(Object.fromEntries(report.hosts.map((h) => [h.host, h.status]))).toEqual({ cli1: 'ok', gone: 'failed' })
  })

  it('bad usage exits 2 with one clear line and no stack trace', async () => {
    const cases: [string[], string][] = [
      [['--dry-run'], '--inventory FILE is required'],
      [['-i', inventory, '--exit-code'], '--exit-code only makes sense with --dry-run'],
      [['-i', inventory, '--parallel', '0'], '--parallel: expected a whole number >= 1'],
      [['-i', inventory, '--limit', 'nosuch'], '--limit: "nosuch" is neither a host'],
      [['-i', inventory, '--tasks', 'nosuch'], '--tasks: unknown task "nosuch"'],
      [['-i', join(env.dir, 'missing.yaml')], 'missing.yaml'],
      [['-i', inventory, '--holder', '0123456789ab'], '--holder only goes with unlock'],
    ]
    for (const [args, message] of cases) {
      const r = await cli(args)
      expect(r.code, `${args.join(' ')}\n${cliOutput(r)}`).toBe(2)
      expect(r.stderr).toContain(message)
      expect(r.stderr).not.toMatch(/\n\s+at /)
      expect(r.stdout).toBe('')
    }
  })

  it('unlock kills only the holder named by --holder, on exactly one host', async () => {
    // A holder whose connection never closes: the lock script of src/engine/lock.ts with an endless stdin.
    const script = `mkdir -p ${STATE} && exec 9>>${STATE}/lock && flock -n 9 && printf '%s (remote pid %s)\\n' 'a1b2c3d4e5f6 stuck@elsewhere pid 4242' "$$" > ${STATE}/lock.holder && echo MP-LOCKED && exec cat >/dev/null`
    await host.container.copyContentToContainer([{ content: script + '\n', target: '/root/stuck-holder.sh' }])
    await host.exec("systemd-run --unit mp-stuck-holder sh -c 'sleep 600 | sh /root/stuck-holder.sh'")
    await until(
      'the stuck holder taking the host lock',
      async () => (await host.exec(`cat ${STATE}/lock.holder`)).stdout.includes('stuck@elsewhere'),
      { timeoutMs: 60_000, intervalMs: 100 },
    )
    expect((await host.exec(`cat ${STATE}/lock.holder`)).stdout).toContain('stuck@elsewhere')
    const holderAlive = async () => (await host.exec('systemctl is-active mp-stuck-holder')).stdout.trim()

    const blocked = await cli(['-i', inventory])
    expect(blocked.code, cliOutput(blocked)).toBe(1)
    expect(blocked.stdout, cliOutput(blocked)).toContain('cli1 is locked by another run: a1b2c3d4e5f6 stuck@elsewhere pid 4242')
    expect(blocked.stdout).toContain('provision unlock --inventory <file> --limit cli1 --holder a1b2c3d4e5f6')

    const refused: [string[], number, string][] = [
      [['unlock', '-i', inventory, '--limit', 'cli1'], 2, 'unlock needs --holder ID'],
      [['unlock', '-i', inventory, '--limit', 'cli1', '--holder', 'stuck'], 2, '--holder: expected the 12 hexadecimal digits'],
      [['unlock', '-i', inventory, '--holder', 'a1b2c3d4e5f6'], 2, '--limit must select exactly one host'],
      [['unlock', '-i', twoHosts, '--limit', 'redis', '--holder', 'a1b2c3d4e5f6'], 2, '"redis" selects cli1, gone'],
      [
        ['unlock', '-i', inventory, '--limit', 'cli1', '--holder', 'ffffffffffff'],
        1,
        'cli1 is locked by a1b2c3d4e5f6 stuck@elsewhere pid 4242',
      ],
    ]
    for (const [args, code, message] of refused) {
      const r = await cli(args)
      expect(r.code, `${args.join(' ')}\n${cliOutput(r)}`).toBe(code)
      expect(r.stderr).toContain(message)
      expect(await holderAlive()).toBe('active')
    }

    const unlock = await cli(['unlock', '-i', inventory, '--limit', 'cli1', '--holder', 'a1b2c3d4e5f6'])
    expect(unlock.code, cliOutput(unlock)).toBe(0)
    expect(unlock.stdout).toMatch(/^cli1: cleared: a1b2c3d4e5f6 stuck@elsewhere pid 4242 \(remote pid \d+\)\n$/)
    const after = await cli(['-i', inventory])
    expect(after.code, cliOutput(after)).toBe(0)
    const again = await cli(['unlock', '-i', inventory, '--limit', 'cli1', '--holder', 'a1b2c3d4e5f6'])
    expect(again.stdout).toBe('cli1: not held\n')
    await host.exec('systemctl stop mp-stuck-holder')
  })
})
