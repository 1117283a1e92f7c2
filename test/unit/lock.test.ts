import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { stringify } from 'yaml'
import { InventoryError } from '../../src/inventory/errors.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import { describeDrift, driftDiff, lockDrift, parseVenvContents, wheelNameVersion } from '../../src/synapse/lock/drift.js'
import { readLock } from '../../src/inventory/controller-files.js'
import { entriesFor, LockError, parseLock } from '../../src/synapse/lock/lock-file.js'
import { evaluateMarker, MarkerError, targetEnvironment } from '../../src/synapse/lock/markers.js'
import { lockTargets, LockUsageError } from '../../src/commands/lock/index.js'
import { cutoffOf } from '../../src/artifacts/lock-resolve.js'
import { releaseTimeFrom } from '../../src/artifacts/release-date.js'
import { pythonVirtualenv } from '../../src/resources/python-venv.js'
import { FactValues } from '../../src/facts/fact.js'
import { Prediction, type Change } from '../../src/resources/resource.js'
import type { Connection } from '../../src/ssh/connection.js'
import { fakeHash, fixtureLockText, writeFixtureLock, writeFixtureWheelhouse } from './fixtures/lock.js'

const work = mkdtempSync(join(tmpdir(), 'mp-lock-test-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

const FILE = 'synapse-lock/1.163.2.txt'
const lockError = (text: string, expected?: string): LockError => {
  try {
    parseLock(text, FILE, expected)
  } catch (error) {
    if (error instanceof LockError) return error
    throw error
  }
  throw new Error('parseLock accepted the text')
}

describe('environment markers', () => {
  const py311 = targetEnvironment('3.11')
  const py313 = targetEnvironment('3.13.5')
  it('compares Python versions as versions, not strings', () => {
    expect(evaluateMarker("python_full_version < '3.11'", py311)).toBe(false)
    expect(evaluateMarker("python_full_version >= '3.11'", py311)).toBe(true)
    expect(evaluateMarker("python_version < '3.9'", targetEnvironment('3.10'))).toBe(false) // '3.10' < '3.9' as strings
    expect(evaluateMarker("python_full_version >= '3.13.1'", py313)).toBe(true)
    expect(evaluateMarker("python_version ~= '3.11'", py313)).toBe(true)
    expect(evaluateMarker("python_version == '3.*'", py313)).toBe(true)
    // One release segment is a version too (PEP 440 pads it: 4.0.0): compat.ts's Synapse parser reads none there.
    expect(evaluateMarker("python_version < '4'", py311)).toBe(true)
    expect(evaluateMarker("python_full_version >= '3'", py311)).toBe(true)
  })
  it('knows the target: CPython on x86_64 Linux', () => {
    expect(evaluateMarker("platform_python_implementation == 'PyPy'", py311)).toBe(false)
    expect(evaluateMarker("sys_platform == 'win32'", py311)).toBe(false)
    expect(evaluateMarker("implementation_name != 'PyPy' and python_full_version >= '3.11'", py311)).toBe(true)
    expect(evaluateMarker("(sys_platform == 'win32' or platform_machine == 'x86_64') and python_version >= '3.10'", py311)).toBe(true)
    expect(evaluateMarker("sys_platform == 'win32' or sys_platform == 'darwin'", py311)).toBe(false)
    expect(evaluateMarker("'linux' in sys_platform", py311)).toBe(true)
    expect(evaluateMarker(undefined, py311)).toBe(true)
  })
  it('refuses text it cannot read instead of guessing', () => {
    expect(() => evaluateMarker("python_version >> '3'", py311)).toThrow(MarkerError)
    expect(() => evaluateMarker("(python_version >= '3'", py311)).toThrow(/unbalanced/)
    expect(() => evaluateMarker("colour == 'red'", py311)).toThrow(/unknown variable colour/)
  })
})

describe('lock file', () => {
  it('reads the header, every pin with its hashes and markers, and names normalized', () => {
    const lock = parseLock(fixtureLockText(), FILE, '1.163.2')
    expect(lock).toMatchObject({
      synapseVersion: '1.163.2',
      requirement: 'matrix-synapse[postgres,redis]==1.163.2',
      resolvedAsOf: '2026-10-23T20:14:20Z',
      python: '>=3.10',
    })
    expect(lock.entries).toHaveLength(8)
    expect(lock.entries.find((e) => e.name === 'prometheus-client')).toMatchObject({
      version: '0.26.0',
      hashes: [fakeHash('prometheus-client-0.26.0-a'), fakeHash('prometheus-client-0.26.0-b')],
    })
    expect(lock.entries.filter((e) => e.name === 'pillow').map((e) => e.marker)).toEqual([
      "python_full_version < '3.11'",
      "python_full_version >= '3.11'",
    ])
    expect(lock.digest).toMatch(/^[0-9a-f]{64}$/)
  })

  it('picks the lines of one interpreter: one pillow per Python, no PyPy driver', () => {
    const lock = parseLock(fixtureLockText(), FILE)
    const for310 = entriesFor(lock, targetEnvironment('3.10'))
    const for313 = entriesFor(lock, targetEnvironment('3.13'))
    expect(for310.find((e) => e.name === 'pillow')?.version).toBe('12.3.0')
    expect(for313.find((e) => e.name === 'pillow')?.version).toBe('13.0.0')
    expect(for313.map((e) => e.name)).not.toContain('psycopg2cffi')
    expect(for313).toHaveLength(6)
  })

  it('refuses a file that is not a lock, with the file and what to run', () => {
    const e = lockError('twisted==26.4.0\n', '1.163.2')
    expect(e.message).toContain(`${FILE}:1: not a matrix-provision Synapse lock`)
    expect(e.hint).toContain('provision lock --inventory <inventory> --synapse-version 1.163.2')
  })

  it('refuses loose pins, missing or malformed hashes, and a pin given twice, naming the line', () => {
    const text = fixtureLockText()
    expect(lockError(text.replace('twisted==26.4.0', 'twisted>=26.4.0')).message).toMatch(
      /:\d+: "twisted>=26\.4\.0" is not an exact pin name==version/,
    )
    const noHash = text.replace(/(txredisapi==1\.5\.0) \\\n.*\\\n.*\n/, '$1\n')
    expect(lockError(noHash).message).toMatch(/txredisapi==1\.5\.0 has no --hash/)
    expect(lockError(text.replace(/--hash=sha256:[0-9a-f]{64}/, '--hash=md5:abc')).message).toContain(
      'is not a --hash=sha256:<64 hex digits> option',
    )
    const twice = text + 'twisted==26.4.0 --hash=sha256:' + fakeHash('x') + '\n'
    expect(lockError(twice).message).toMatch(/twisted is pinned twice \(also on line \d+\)/)
  })

  it('refuses a lock for another version than the inventory asks for, or one whose pin contradicts its header', () => {
    expect(lockError(fixtureLockText('1.163.2'), '1.158.0').message).toContain(
      'this lock is for Synapse 1.163.2, but the inventory asks for 1.158.0',
    )
    const contradicting = fixtureLockText().replace('matrix-synapse==1.163.2', 'matrix-synapse==1.163.1')
    expect(lockError(contradicting).message).toMatch(/:\d+: matrix-synapse is pinned to 1\.163\.1, but the header says 1\.163\.2/)
    expect(lockError(fixtureLockText().replace('# resolved-as-of: 2026-10-23T20:14:20Z\n', '')).message).toContain(
      'the header has no "# resolved-as-of:" line',
    )
  })

  it('refuses a lock resolved without the extras the tool installs', () => {
    const noRedis = fixtureLockText().replace(
      '# requirement: matrix-synapse[postgres,redis]==1.163.2',
      '# requirement: matrix-synapse[postgres]==1.163.2',
    )
    expect(lockError(noRedis).message).toContain('resolved without the extra(s) redis')
  })

  it('a missing lock file says which file and what to run', async () => {
    const error = await readLock(join(work, 'nowhere'), '1.158.0', 'prod.yaml').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockError)
    expect((error as LockError).message).toContain(`${join(work, 'nowhere', '1.158.0.txt')}: no lock for Synapse 1.158.0`)
    expect((error as LockError).hint).toContain('provision lock --inventory prod.yaml --synapse-version 1.158.0')
  })
})

describe('drift of a venv from its lock', () => {
  const lock = parseLock(fixtureLockText(), FILE)
  const exact = () =>
    new Map([
      ['matrix-synapse', '1.163.2'],
      ['pillow', '13.0.0'],
      ['prometheus-client', '0.26.0'],
      ['psycopg2', '2.9.13'],
      ['twisted', '26.4.0'],
      ['txredisapi', '1.5.0'],
      ['pip', '23.0.1'],
      ['setuptools', '66.1.1'],
    ])

  it("none when the venv holds the lock for its Python (the venv's own pip and setuptools are left alone)", () => {
    expect(lockDrift(lock, { python: '3.11.2', installed: exact() })).toEqual({ missing: [], differ: [], extra: [] })
  })

  it('lists versions that differ, pins that are missing and distributions the lock does not have', () => {
    const installed = exact()
    installed.set('txredisapi', '1.6.0')
    installed.delete('prometheus-client')
    installed.set('psycopg2-binary', '2.9.10')
    const drift = lockDrift(lock, { python: '3.11.2', installed })
    expect(drift).toEqual({
      differ: [{ name: 'txredisapi', installed: '1.6.0', locked: '1.5.0' }],
      missing: [{ name: 'prometheus-client', version: '0.26.0' }],
      extra: [{ name: 'psycopg2-binary', version: '2.9.10' }],
    })
    expect(describeDrift(drift)).toBe('txredisapi 1.6.0 -> 1.5.0, +prometheus-client 0.26.0, -psycopg2-binary 2.9.10')
    expect(driftDiff(drift, '/opt/venvs/matrix-synapse', '1.163.2.txt')).toBe(
      '--- /opt/venvs/matrix-synapse (installed)\n+++ 1.163.2.txt\n-txredisapi==1.6.0\n+txredisapi==1.5.0\n+prometheus-client==0.26.0\n-psycopg2-binary==2.9.10\n',
    )
  })

  it("judges by the venv's own Python: Python 3.10 wants the other pillow", () => {
    expect(lockDrift(lock, { python: '3.10.12', installed: exact() }).differ).toEqual([
      { name: 'pillow', installed: '13.0.0', locked: '12.3.0' },
    ])
  })

  it('shortens a long list to a plan line', () => {
    const drift = lockDrift(lock, { python: '3.11.2', installed: new Map() })
    expect(describeDrift(drift)).toBe('+matrix-synapse 1.163.2, +pillow 13.0.0, +prometheus-client 0.26.0, +psycopg2 2.9.13 and 2 more')
  })

  it('parses the venv fact (names normalized) and no venv as null', () => {
    expect(parseVenvContents('python 3.11.2\nPrometheus_Client 0.26.0\nmatrix-synapse 1.163.2\n', 0)).toEqual({
      python: '3.11.2',
      installed: new Map([
        ['prometheus-client', '0.26.0'],
        ['matrix-synapse', '1.163.2'],
      ]),
    })
    expect(parseVenvContents('', 127)).toBeNull()
    expect(wheelNameVersion('prometheus_client-0.26.0-py3-none-any.whl')).toEqual({ name: 'prometheus-client', version: '0.26.0' })
    expect(wheelNameVersion('psycopg2-2.9.13.tar.gz')).toBeUndefined()
  })
})

describe('the venv resource plans from the lock', () => {
  const lock = parseLock(fixtureLockText(), '/inv/synapse-lock/1.163.2.txt')
  const venv = pythonVirtualenv({
    path: '/opt/venvs/matrix-synapse',
    lock,
    packageName: 'matrix-synapse',
    wheelhouse: '/controller/wheels',
  })
  const planWith = (stdout: string, code = 0) => {
    const facts = new FactValues()
    const [fact] = venv.facts()
    facts.set(fact!.id, fact!.parse(stdout, code))
    return venv.plan({ conn: undefined as never, facts, predicted: new Prediction(), dryRun: true })
  }

  it('a fresh host: install from the lock, naming it', async () => {
    expect(await planWith('', 127)).toMatchObject({
      action: 'install',
      summary:
        'install matrix-synapse 1.163.2 into /opt/venvs/matrix-synapse from the lock synapse-lock/1.163.2.txt (8 pins) (from the uploaded wheelhouse, offline)',
      touches: ['pkg:matrix-synapse', '/opt/venvs/matrix-synapse/'],
    })
  })

  it('a venv that matches: no change', async () => {
    expect(
      await planWith(
        'python 3.11.2\nmatrix-synapse 1.163.2\npillow 13.0.0\nprometheus-client 0.26.0\npsycopg2 2.9.13\ntwisted 26.4.0\ntxredisapi 1.5.0\npip 23.0.1\n',
      ),
    ).toBeNull()
  })

  it('a venv where pip kept a newer dependency: an update that restarts Synapse, with the diff', async () => {
    const change = await planWith(
      'python 3.11.2\nmatrix-synapse 1.163.2\npillow 13.0.0\nprometheus-client 0.26.0\npsycopg2 2.9.13\ntwisted 26.4.0\ntxredisapi 1.6.0\n',
    )
    expect(change).toMatchObject({
      action: 'update',
      summary:
        'bring /opt/venvs/matrix-synapse back to the lock synapse-lock/1.163.2.txt: 1 differ (txredisapi 1.6.0 -> 1.5.0) (from the uploaded wheelhouse, offline)',
      touches: ['pkg:matrix-synapse', '/opt/venvs/matrix-synapse/'],
    })
    expect(change?.diff).toContain('-txredisapi==1.6.0\n+txredisapi==1.5.0\n')
  })

  it('another Synapse in the venv: an upgrade from the lock', async () => {
    const change = await planWith(
      'python 3.11.2\nmatrix-synapse 1.158.0\npillow 13.0.0\nprometheus-client 0.25.0\npsycopg2 2.9.13\ntwisted 25.5.0\ntxredisapi 1.4.11\n',
    )
    expect(change?.summary).toBe(
      'upgrade matrix-synapse 1.158.0 -> 1.163.2 in /opt/venvs/matrix-synapse from the lock synapse-lock/1.163.2.txt: 4 differ (matrix-synapse 1.158.0 -> 1.163.2, prometheus-client 0.25.0 -> 0.26.0, twisted 25.5.0 -> 26.4.0, txredisapi 1.4.11 -> 1.5.0) (from the uploaded wheelhouse, offline)',
    )
  })
})

describe('the venv resource carries its plan on the change (apply reads nothing else)', () => {
  const spec = {
    path: '/opt/venvs/matrix-synapse',
    lock: parseLock(fixtureLockText(), '/inv/synapse-lock/1.163.2.txt'),
    packageName: 'matrix-synapse',
  }
  const LISTING =
    'python 3.11.2\nmatrix-synapse 1.163.2\npillow 13.0.0\nprometheus-client 0.26.0\npsycopg2 2.9.13\ntwisted 26.4.0\ntxredisapi 1.5.0\n'
  const planOf = (stdout: string, code = 0) => {
    const venv = pythonVirtualenv(spec)
    const facts = new FactValues()
    const [fact] = venv.facts()
    facts.set(fact!.id, fact!.parse(stdout, code))
    return venv.plan({ conn: undefined as never, facts, predicted: new Prediction(), dryRun: true })
  }
  const applied = async (change: Change) => {
    const commands: string[] = []
    const conn = {
      run: (c: { text: string }) => {
        commands.push(c.text)
        return Promise.resolve({ code: 0, stdout: '', stderr: '' })
      },
      writeFile: () => Promise.resolve(),
    } as unknown as Connection
    // Another instance than the one that planned: nothing is kept between plan and apply.
    await pythonVirtualenv(spec).apply(change, { conn, state: { aptListsStale: false } })
    return commands.join('\n')
  }

  it('what the lock does not hold is uninstalled as planned; a fresh venv uninstalls nothing; a change it did not plan is refused', async () => {
    const drifted = (await planOf(`${LISTING}requests 2.32.3\nidna 3.10\n`))!
    expect(drifted.diff).toContain('-requests==2.32.3')
    expect(await applied(drifted)).toContain('; /opt/venvs/matrix-synapse/bin/pip uninstall --disable-pip-version-check -y idna requests;')
    expect(await applied((await planOf('', 127))!)).not.toContain('uninstall')
    const { payload: _, ...bare } = drifted
    await expect(applied(bare)).rejects.toThrow('venv:/opt/venvs/matrix-synapse: the change carries no venv plan')
  })
})

describe('release dates and cutoffs', () => {
  const releases = {
    '1.163.2': [{ upload_time_iso_8601: '2026-10-23T20:14:05.176346Z' }, { upload_time_iso_8601: '2026-10-23T20:14:19.365182Z' }],
    '1.163.1': [{ upload_time_iso_8601: '2026-10-20T10:00:00Z' }],
    '1.163.0rc1': [],
  }
  it('a release is as of its last upload, rounded up to the second', () => {
    expect(cutoffOf(releaseTimeFrom(releases, '1.163.2'))).toBe('2026-10-23T20:14:20Z')
  })
  it('a version PyPI does not have is an error naming its neighbours', () => {
    expect(() => releaseTimeFrom(releases, '1.163.3')).toThrow(
      'matrix-synapse 1.163.3 is not on PyPI (releases of that minor: 1.163.2, 1.163.1)',
    )
  })
})

describe('the inventory loads the lock of each pip host before any connection', () => {
  const base = (synapse: Record<string, unknown>) =>
    stringify({
      defaults: { vars: { serverName: 'example.org', synapse } },
      hosts: { hs: { address: '203.0.113.5', roles: ['apt-keyring', 'postgres', 'synapse'] } },
    })
  const load = (synapse: Record<string, unknown>) => loadInventoryFromString(base(synapse), join(work, 'inventory.yaml'), {})
  const issues = async (synapse: Record<string, unknown>) => {
    const error = await load(synapse).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(InventoryError)
    return (error as InventoryError).issues
  }
  writeFixtureLock(join(work, 'synapse-lock'))

  it('finds synapse-lock/<version>.txt beside the inventory', async () => {
    const inventory = await load({ install: 'pip', version: '1.163.2' })
    expect(inventory.hosts[0]!.vars.synapse.lock).toMatchObject({
      synapseVersion: '1.163.2',
      file: join(work, 'synapse-lock', '1.163.2.txt'),
    })
  })

  it('a version without a lock: an issue at synapse.version naming the file and the command', async () => {
    const [issue] = await issues({ install: 'pip', version: '1.158.0' })
    expect(issue).toMatchObject({ line: 6, path: 'defaults.vars.synapse.version' })
    expect(issue!.message).toContain(`${join(work, 'synapse-lock', '1.158.0.txt')}: no lock for Synapse 1.158.0`)
    expect(issue!.hint).toContain(`provision lock --inventory ${join(work, 'inventory.yaml')} --synapse-version 1.158.0`)
  })

  it('a broken lock: the lock file and line in the message', async () => {
    const dir = join(work, 'broken-locks')
    writeFixtureLock(dir)
    writeFileSync(join(dir, '1.163.2.txt'), fixtureLockText().replace('twisted==26.4.0', 'twisted~=26.4'))
    const [issue] = await issues({ install: 'pip', version: '1.163.2', lockDir: dir })
    expect(issue!.path).toBe('defaults.vars.synapse.lockDir')
    expect(issue!.message).toMatch(
      new RegExp(`${join(dir, '1.163.2.txt').replace(/[.]/g, '\\.')}:\\d+: "twisted~=26\\.4" is not an exact pin`),
    )
  })

  it('a wheelhouse built from another lock is refused', async () => {
    const wheels = join(work, 'stale-wheels')
    writeFixtureWheelhouse(wheels, join(work, 'synapse-lock', '1.163.2.txt'), fixtureLockText('1.163.2', { 'prometheus-client': '0.25.0' }))
    const [issue] = await issues({ install: 'pip', wheelhouse: wheels })
    expect(issue!.path).toBe('defaults.vars.synapse.wheelhouse')
    expect(issue!.message).toContain(`the wheelhouse ${wheels} was not built from ${join(work, 'synapse-lock', '1.163.2.txt')}`)
  })

  it('a wheelhouse built from the lock gives the version when synapse.version is unset', async () => {
    const wheels = join(work, 'wheels')
    writeFixtureWheelhouse(wheels, join(work, 'synapse-lock', '1.163.2.txt'), fixtureLockText())
    const inventory = await load({ install: 'pip', wheelhouse: wheels })
    expect(inventory.hosts[0]!.vars.synapse).toMatchObject({ version: '1.163.2', lock: { synapseVersion: '1.163.2' } })
  })

  it('the apt method needs no lock', async () => {
    const inventory = await load({ install: 'apt', version: '1.158.0' })
    expect(inventory.hosts[0]!.vars.synapse.lock).toBeUndefined()
  })
})

describe('provision lock: which versions an inventory needs', () => {
  const inventory = (
    hosts: Record<string, { roles: string[]; synapse?: Record<string, unknown> }>,
    synapse: Record<string, unknown> = {},
  ) =>
    loadInventoryFromString(
      stringify({
        defaults: { vars: { serverName: 'example.org', synapse } },
        hosts: Object.fromEntries(
          Object.entries(hosts).map(([name, h], i) => [
            name,
            { address: `203.0.113.${i + 1}`, roles: h.roles, ...(h.synapse ? { vars: { synapse: h.synapse } } : {}) },
          ]),
        ),
      }),
      join(work, 'targets', 'inventory.yaml'),
      {},
      { locks: false },
    )

  it('one lock per distinct version and lock directory of the pip hosts; apt hosts need none', async () => {
    const inv = await inventory(
      {
        a: { roles: ['postgres', 'synapse'] },
        b: { roles: ['postgres', 'synapse'], synapse: { version: '1.158.0' } },
        c: { roles: ['apt-keyring', 'postgres', 'synapse'], synapse: { install: 'apt', version: '1.140.0' } },
      },
      { install: 'pip', version: '1.163.2' },
    )
    expect(lockTargets(inv)).toEqual([
      { version: '1.163.2', lockDir: join(work, 'targets', 'synapse-lock') },
      { version: '1.158.0', lockDir: join(work, 'targets', 'synapse-lock') },
    ])
    expect(lockTargets(inv, '1.164.0')).toEqual([{ version: '1.164.0', lockDir: join(work, 'targets', 'synapse-lock') }])
  })

  it('says what to do when there is nothing to lock', async () => {
    const apt = await inventory({ a: { roles: ['apt-keyring', 'postgres', 'synapse'] } }, { install: 'apt' })
    expect(() => lockTargets(apt)).toThrow(LockUsageError)
    expect(() => lockTargets(apt)).toThrow('no host installs Synapse with pip (synapse.install: pip); pass --synapse-version V')
    const unpinned = await inventory({ a: { roles: ['postgres', 'synapse'] } }, { install: 'pip' })
    expect(() => lockTargets(unpinned)).toThrow('the pip hosts (a) set no synapse.version; set it, or pass --synapse-version V')
  })
})

describe('the sandbox inventory points at the committed locks', () => {
  it("synapse.lockDir is the template directory's synapse-lock, relative to the generated file", async () => {
    const { readFileSync } = await import('node:fs')
    const { renderSandboxInventory } = await import('../../src/commands/sandbox/inventory.js')
    const template = readFileSync(new URL('../../inventories/sandbox.yaml', import.meta.url), 'utf8')
    const rendered = renderSandboxInventory(template, {
      file: '/tmp/sb/inventory.yaml',
      sandboxDir: '/tmp/sb',
      sshPort: 2331,
      httpsPort: 8331,
      element: { version: '1.11.90', signed: true },
      lockDir: '/repo/inventories/synapse-lock',
    })
    expect(rendered).toContain('lockDir: ../../repo/inventories/synapse-lock')
  })
})
