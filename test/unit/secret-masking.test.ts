import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { RunReport } from '../../src/engine/report-types.js'
import { fileState } from '../../src/facts/files.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import { createRunLog } from '../../src/report/log.js'
import { renderJson } from '../../src/report/text.js'
import type { SynapseLock } from '../../src/synapse/lock/lock-file.js'
import { pythonVirtualenv } from '../../src/resources/python-venv.js'
import { LineMasker, MASK, maskSecrets, Secret } from '../../src/core/secret.js'
import type { CommandResult, Connection, RunOptions } from '../../src/ssh/connection.js'
import { AUTH, repositoryAccess } from '../../tasks/apt-keyring/index.js'

// Each value is unique to its test: the set of known secrets is process-wide.
describe('masking secrets', () => {
  it('masks the longest secret first: a secret that begins with another is masked whole', () => {
    new Secret('prefix-1a2b', 'test')
    new Secret('prefix-1a2b-and-more-3c4d', 'test')
    expect(maskSecrets('a=prefix-1a2b-and-more-3c4d b=prefix-1a2b')).toBe(`a=${MASK} b=${MASK}`)
  })

  it('masks before JSON serialisation: a secret with a quote or a backslash does not escape in --json', () => {
    const value = 'q"uo\\te-9f8e7d'
    new Secret(value, 'test')
    const report = {
      mode: 'apply',
      hosts: [{ host: 'h', status: 'failed', error: `psql: password ${value} rejected`, tasks: [], warnings: [], durationMs: 1 }],
    } as unknown as RunReport
    const json = renderJson(report)
    expect(json).not.toContain(value)
    expect(json).not.toContain(JSON.stringify(value).slice(1, -1))
    expect((JSON.parse(json) as RunReport).hosts[0]!.error).toBe(`psql: password ${MASK} rejected`)
  })

  it('masks before serialising in --log-file too', async () => {
    const value = 'lo"g\\secret-5a6b'
    new Secret(value, 'test')
    const dir = await mkdtemp(join(tmpdir(), 'mp-mask-'))
    try {
      const log = await createRunLog(join(dir, 'run.log'))
      log.event({ msg: 'command finished', command: `echo ${value}`, nested: { [`key-${value}`]: [value] } })
      log.close()
      const text = await readFile(join(dir, 'run.log'), 'utf8')
      expect(text).not.toContain(value)
      expect(text).not.toContain(JSON.stringify(value).slice(1, -1))
      expect(JSON.parse(text)).toMatchObject({ command: `echo ${MASK}`, nested: { [`key-${MASK}`]: [MASK] } })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('masks live output per line: a secret split across chunks is still masked', () => {
    new Secret('split-across-chunks-7e8f', 'test')
    const out: string[] = []
    const masker = new LineMasker((line) => out.push(line))
    for (const chunk of ['first line\npassword: split-acr', 'oss-chu', 'nks-7e8f\nlast line without newline: split-across-', 'chunks-7e8f'])
      masker.push(chunk)
    masker.flush()
    expect(out).toEqual(['first line\n', `password: ${MASK}\n`, `last line without newline: ${MASK}\n`])
    expect(out.join('')).not.toContain('7e8f')
  })

  it('masks the password of any URL with credentials, and the inventory registers URL passwords as secrets', async () => {
    expect(maskSecrets('GET https://bob:hunter2-url@pypi.example/simple/ failed')).toBe(
      `GET https://bob:${MASK}@pypi.example/simple/ failed`,
    )
    await loadInventoryFromString(
      [
        'defaults:',
        '  vars:',
        '    serverName: example.test',
        '    synapse: { install: pip, pipIndexUrl: "https://deploy:pip%2Fpass-1234@pypi.example/simple" }',
        '    aptRepository: { url: "https://apt:apt-pass-5678@apt.example/debian" }',
        'hosts:',
        '  h: { address: 192.0.2.1, roles: [redis] }',
      ].join('\n'),
      'inventory.yaml',
    )
    // The password alone, as a tool would print it after decoding the URL.
    expect(maskSecrets('auth for apt-pass-5678 and pip/pass-1234 and pip%2Fpass-1234')).toBe(`auth for ${MASK} and ${MASK} and ${MASK}`)
  })

  it('pip gets a credentialed index URL on stdin, never on the command line; the plan shows it masked', async () => {
    const url = 'https://deploy:venv-pass-4321@pypi.example/simple'
    new Secret('venv-pass-4321', 'test')
    const calls: { command: string; options?: RunOptions }[] = []
    const conn = {
      host: 'h',
      run: (command: unknown, options?: RunOptions): Promise<CommandResult> => {
        calls.push({ command: String(command), options })
        return Promise.resolve({ command: String(command), code: 0, signal: null, stdout: '', stderr: '', durationMs: 1, timedOut: false })
      },
      writeFile: () => Promise.resolve(),
    } as unknown as Connection
    const lock = {
      file: 'locks/x-1.0.txt',
      synapseVersion: '1.0',
      requirement: 'x==1.0',
      resolvedAsOf: '2026-01-01',
      python: '>=3.10',
      resolver: 'test',
      entries: [],
      digest: '',
      text: 'x==1.0\n',
    } as SynapseLock
    const venv = pythonVirtualenv({ path: '/opt/venvs/x', lock, indexUrl: url, packageName: 'x' })
    const facts = { get: () => null } as never
    const change = await venv.plan({ conn, facts, predicted: { paths: new Set(), factsAfter: new Map() } as never, dryRun: true })
    expect(change?.summary).toContain(`https://deploy:${MASK}@pypi.example/simple`)
    await venv.apply(change!, { conn, state: { aptListsStale: false } })
    const pip = calls.find((c) => c.command.includes('/opt/venvs/x/bin/pip install'))
    for (const c of calls) expect(c.command).not.toContain('venv-pass-4321')
    for (const c of calls) expect(c.command).not.toContain('pypi.example')
    expect(pip?.command).toMatch(/^IFS= read -r PIP_INDEX_URL; export PIP_INDEX_URL; .*\/opt\/venvs\/x\/bin\/pip install /)
    expect(pip?.options?.stdin).toBe(`${url}\n`)
  })

  it('apt repository credentials go to a 0600 auth.conf entry (a Secret), not into the sources list', () => {
    const { url, auth } = repositoryAccess('https://apt:apt%40pass-8765@apt.example/debian/')
    expect(url).toBe('https://apt.example/debian/')
    expect(auth).toBeInstanceOf(Secret)
    expect(auth!.reveal()).toBe('machine apt.example/debian login apt password apt@pass-8765\n')
    expect(String(auth)).toBe(MASK)
    expect(AUTH).toBe('/etc/apt/auth.conf.d/matrix-provision.conf')
    expect(repositoryAccess('https://apt.example/debian')).toEqual({ url: 'https://apt.example/debian' })
  })

  it('file states (SHA-256 of the content) are sensitive facts: the probe that reads them is never echoed', () => {
    expect(fileState('/etc/redis/redis.conf').sensitive).toBe(true)
  })
})

describe('a very long secret', () => {
  it('is masked, and masking of every other secret keeps working (a huge alternation is no valid RegExp)', () => {
    const long = new Secret(`password: long-${'padding line\n'.repeat(200_000)}end`, 'test')
    const short = new Secret('short-secret-7f3a9c', 'test')
    expect(maskSecrets(`a ${long.reveal()} b short-secret-7f3a9c c`)).toBe(`a ${MASK} b ${MASK} c`)
    expect(maskSecrets('only short-secret-7f3a9c here')).toBe(`only ${MASK} here`)
    expect(short.toString()).toBe(MASK)
  })
})
