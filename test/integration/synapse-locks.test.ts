import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { stringify } from 'yaml'
import { driftCount, lockDrift, parseVenvContents, VENV_CONTENTS_SCRIPT } from '../../src/synapse/lock/drift.js'
import { lockPath, type SynapseLock } from '../../src/synapse/lock/lock-file.js'
import { shellQuote } from '../../src/core/quote.js'
import { LOCK_DIR, pipSynapseVars, synapseLock, synapseWheelhouse } from '../support/artifacts.js'
import { startHosts, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'

/**
 * Three Synapse releases spread over the last 12 months (today 2026-11-30) install from their
 * committed locks and start: 1.144.0 and 1.152.0 (onto it) on a real Debian 12 host, the newest,
 * 1.163.2, on Debian 13 (Python 3.13). Each answers /_matrix/federation/v1/version with its own
 * version, and the venv holds exactly the lock's set. 1.152.0 is one the issue saw crash with
 * today's txredisapi: its lock pins 1.4.11. The newest on Debian 12 is not installed a second time
 * here: test/e2e/upgrade.test.ts installs 1.158.0 and then 1.163.2 on Debian 12 from the same locks
 * and checks the same (the version served, the venv exactly the lock's set, no Traceback, a second
 * run with nothing to do).
 */
const RELEASES = ['1.144.0', '1.152.0', '1.163.2'] as const // 2025-12-09, 2026-04-28, 2026-10-23
const ON_DEBIAN_12 = RELEASES.slice(0, 2)
const NEWEST = RELEASES[2]
const DRIFT = RELEASES[1]
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const BIN = join(ROOT, 'bin', 'provision.js')
const run = promisify(execFile)

/** The bundled CLI, as users run it. */
async function bin(args: string[]): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = Date.now()
  try {
    const { stdout, stderr } = await run('node', [BIN, ...args], {
      cwd: ROOT,
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, NO_COLOR: '1' },
    })
    return { code: 0, stdout, stderr, ms: Date.now() - started }
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string }
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '', ms: Date.now() - started }
  }
}

describe('provision lock (the bundled CLI)', () => {
  // A directory of this run's own: .cache is shared by every checkout of the machine, and their test runs.
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mp-lock-test-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('resolves the same lock on any day: re-resolving the committed 1.163.2 gives the file byte for byte', async () => {
    const inventory = join(dir, 'inventory.yaml')
    await writeFile(
      inventory,
      stringify({
        defaults: { vars: { serverName: 'lk.test', synapse: { install: 'pip', version: NEWEST, lockDir: './synapse-lock' } } },
        hosts: { lk: { address: '192.0.2.1', roles: ['postgres', 'synapse'] } },
      }),
    )
    const first = await bin(['lock', '--inventory', inventory])
    expect(first.code, first.stderr).toBe(0)
    expect(first.stdout).toMatch(
      new RegExp(
        `synapse-lock/${NEWEST.replace(/\./g, '\\.')}\\.txt: written \\(matrix-synapse ${NEWEST}, \\d+ pins, resolved as of 2026-10-23T20:14:20Z`,
      ),
    )
    console.log(`provision lock ${NEWEST}: ${(first.ms / 1000).toFixed(1)} s (${first.stdout.trim().split('\n').at(-1)})`)
    expect(await readFile(lockPath(join(dir, 'synapse-lock'), NEWEST), 'utf8')).toBe(await readFile(lockPath(LOCK_DIR, NEWEST), 'utf8'))
    const again = await bin(['lock', '--inventory', inventory])
    expect(again.stdout).toContain(': unchanged (')
    // --wheelhouse/--python: the wheelhouse of that lock for a target Python, the same the tests install from.
    const expected = await synapseWheelhouse('3.11', NEWEST)
    const wheels = await bin(['lock', '--inventory', inventory, '--wheelhouse', join(ROOT, '.cache', 'wheelhouse'), '--python', '3.11'])
    expect(wheels.code, wheels.stderr).toBe(0)
    expect(wheels.stdout).toMatch(
      new RegExp(
        `${expected.dir.split('/').at(-1)!.replace(/\./g, '\\.')}: wheelhouse for Python 3\\.11, ${expected.files.length} wheels, \\d+ MB, reused`,
      ),
    )
  }, 180_000)

  it('refuses an inventory whose version has no lock, before any connection: file, what to run, exit 2', async () => {
    await mkdir(join(dir, 'empty-locks'), { recursive: true })
    const inventory = join(dir, 'missing.yaml')
    // 192.0.2.1 (TEST-NET-1) is unreachable: an attempt to connect would time out, not exit 2 at once.
    await writeFile(
      inventory,
      stringify({
        defaults: { vars: { serverName: 'lk.test', synapse: { install: 'pip', version: '1.158.0', lockDir: './empty-locks' } } },
        hosts: { lk: { address: '192.0.2.1', roles: ['postgres', 'synapse'] } },
      }),
    )
    const result = await bin(['--inventory', inventory, '--dry-run'])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(`empty-locks/1.158.0.txt: no lock for Synapse 1.158.0`)
    expect(result.stderr).toContain(`provision lock --inventory ${inventory} --synapse-version 1.158.0`)
    expect(result.stderr).not.toMatch(/\n\s+at /)
    expect(result.ms).toBeLessThan(10_000)
    const badVersion = await bin(['lock', '--inventory', inventory, '--synapse-version', 'latest'])
    expect(badVersion.code).toBe(2)
    expect(badVersion.stderr).toContain('--synapse-version: expected a Synapse version')
  })
})

describe.skipIf(!inject('docker'))('Synapse releases of the last 12 months install from their locks and start', () => {
  let env: TestHosts
  let env13: TestHosts
  const locks = new Map<string, SynapseLock>()
  const wheelhouses = new Map<string, { dir: string; synapseVersion: string }>()
  const timings: string[] = []

  beforeAll(async () => {
    const started = Date.now()
    const hosts = Promise.all([startHosts(['lk']), startHosts(['lk13'], { suite: 'trixie' })])
    // One at a time: pip downloads and the psycopg2 build share the controller's 2 cores with the hosts.
    for (const version of ON_DEBIAN_12) {
      const t = Date.now()
      locks.set(version, await synapseLock(version))
      const wh = await synapseWheelhouse('3.11', version)
      wheelhouses.set(version, wh)
      timings.push(`wheelhouse ${version} py3.11 ${wh.reused ? 'reused' : 'built'} ${((Date.now() - t) / 1000).toFixed(1)} s`)
    }
    locks.set(NEWEST, await synapseLock(NEWEST))
    const t = Date.now()
    const wh13 = await synapseWheelhouse('3.13', NEWEST)
    wheelhouses.set(`${NEWEST}-3.13`, wh13)
    timings.push(`wheelhouse ${NEWEST} py3.13 ${wh13.reused ? 'reused' : 'built'} ${((Date.now() - t) / 1000).toFixed(1)} s`)
    ;[env, env13] = await hosts
    timings.push(`setup ${((Date.now() - started) / 1000).toFixed(1)} s`)
  }, 1_200_000)
  afterAll(async () => {
    console.log(`synapse-locks timings:\n  ${timings.join('\n  ')}`)
    await Promise.all([env?.stop(), env13?.stop()])
  })

  async function installAndCheck(hosts: TestHosts, name: string, version: string, wheelhouseKey: string): Promise<void> {
    const inventory = await writeTestInventory(
      hosts,
      [{ name, roles: ['postgres', 'redis', 'synapse'] }],
      { serverName: `${name}.test`, synapse: pipSynapseVars(wheelhouses.get(wheelhouseKey)!) },
      `${name}-${version}.yaml`,
    )
    const applied = await bin(['--inventory', inventory])
    expect(applied.code, applied.stdout + applied.stderr).toBe(0)
    timings.push(`install ${version} on ${name} (apply, whole run) ${(applied.ms / 1000).toFixed(1)} s`)
    const host = hosts.get(name)
    // The running code is the locked release, and it answers the client API.
    const served = await host.exec(
      'curl -sf --max-time 10 http://127.0.0.1:8008/_matrix/federation/v1/version; echo; curl -sf --max-time 10 http://127.0.0.1:8008/_matrix/client/versions',
    )
    expect(served.stdout).toContain(`"version":"${version}"`)
    expect(served.stdout).toContain('"versions":[')
    // The venv holds exactly the lock's set for its Python: nothing missing, nothing else, no other version.
    const listed = await host.exec(`/opt/venvs/matrix-synapse/bin/python -c ${shellQuote(VENV_CONTENTS_SCRIPT)}`)
    const venv = parseVenvContents(listed.stdout, listed.exitCode)
    expect(venv).not.toBeNull()
    expect(lockDrift(locks.get(version)!, venv!)).toEqual({ missing: [], differ: [], extra: [] })
    const journal = await host.exec('journalctl -u matrix-synapse --no-pager | grep -c Traceback || true')
    expect(journal.stdout.trim()).toBe('0')
    // A second run has nothing to do.
    const again = await bin(['--inventory', inventory, '--dry-run', '--exit-code'])
    expect(again.code, again.stdout).toBe(0)
  }

  it.each(ON_DEBIAN_12.map((v) => [v]))(
    'Debian 12: %s from its lock (and the next release onto the previous one)',
    async (version) => {
      await installAndCheck(env, 'lk', version, version)
    },
    1_200_000,
  )

  it('the plan shows a venv that drifted from the lock, and apply rebuilds it beside the running one', async () => {
    const host = env.get('lk')
    const lock = locks.get(DRIFT)!
    const inventory = await writeTestInventory(
      env,
      [{ name: 'lk', roles: ['postgres', 'redis', 'synapse'] }],
      { serverName: 'lk.test', synapse: pipSynapseVars(wheelhouses.get(DRIFT)!) },
      'lk-drift.yaml',
    )
    const redis = lock.entries.find((e) => e.name === 'txredisapi')!
    expect((await host.exec('/opt/venvs/matrix-synapse/bin/pip uninstall -y -q txredisapi')).exitCode).toBe(0)
    const plan = await bin(['--inventory', inventory, '--dry-run', '--exit-code', '--diff'])
    expect(plan.code, plan.stdout).toBe(10)
    // The running venv (/opt/venvs/matrix-synapse-<version> behind the link) is never installed into: the
    // plan rebuilds the release beside it and switches (issue 21), main started once on the rebuilt venv.
    const live = `/opt/venvs/matrix-synapse-${DRIFT}`
    expect(plan.stdout).toContain(
      `rebuild Synapse ${DRIFT} side by side in ${live}-r2 and switch to it: the running ${live} differs from the lock synapse-lock/${DRIFT}.txt (1: +txredisapi ${redis.version}) and is not changed`,
    )
    expect(plan.stdout).toContain(`+txredisapi==${redis.version}`)
    expect(plan.stdout).toMatch(/start matrix-synapse\.service on /)
    const fixed = await bin(['--inventory', inventory])
    expect(fixed.code, fixed.stdout).toBe(0)
    const listed = await host.exec(`/opt/venvs/matrix-synapse/bin/python -c ${shellQuote(VENV_CONTENTS_SCRIPT)}`)
    expect(driftCount(lockDrift(lock, parseVenvContents(listed.stdout, listed.exitCode)!))).toBe(0)
    expect((await host.exec('readlink /opt/venvs/matrix-synapse')).stdout.trim()).toBe(`matrix-synapse-${DRIFT}-r2`)
    expect((await bin(['--inventory', inventory, '--dry-run', '--exit-code'])).code).toBe(0)
  }, 900_000)

  it('Debian 13 (Python 3.13): the newest release from the same lock, through its own wheelhouse', async () => {
    await installAndCheck(env13, 'lk13', NEWEST, `${NEWEST}-3.13`)
  }, 1_200_000)
})
