import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { FactValues } from '../../src/facts/fact.js'
import { lineInFile, lineState, parseLineState, withLine, type LineState } from '../../src/resources/line-in-file.js'
import { Prediction, type Resource } from '../../src/resources/resource.js'
import type { CommandResult, Connection, FileWrite } from '../../src/ssh/connection.js'
import type { ShellCommand } from '../../src/core/shell.js'

/** A host with files in memory: `cat` reads them, writeFile records writes. */
class FakeConnection implements Connection {
  readonly host = 'fake'
  readonly commands: string[] = []
  readonly writes: FileWrite[] = []
  constructor(readonly files: Record<string, string>) {}
  run(built: ShellCommand): Promise<CommandResult> {
    const command = built.text
    this.commands.push(command)
    const m = /^cat '?([^']+?)'?$/.exec(command)
    const content = m ? this.files[m[1]!] : undefined
    const base = { command, signal: null, durationMs: 1, timedOut: false }
    return Promise.resolve(
      content === undefined
        ? { ...base, code: 1, stdout: '', stderr: 'no such file\n' }
        : { ...base, code: 0, stdout: content, stderr: '' },
    )
  }
  writeFile(file: FileWrite): Promise<void> {
    this.writes.push(file)
    return Promise.resolve()
  }
  writeFiles(files: readonly FileWrite[]): Promise<void> {
    this.writes.push(...files)
    return Promise.resolve()
  }
  putFile(): Promise<void> {
    throw new Error('not used')
  }
  putDirectory(): Promise<void> {
    throw new Error('not used')
  }
  spawn(): never {
    throw new Error('not used')
  }
  async close(): Promise<void> {}
}

function factsWith(resource: Resource, state: LineState): FactValues {
  const facts = new FactValues()
  facts.set(resource.facts()[0]!.id, state)
  return facts
}

const fileState = (over: Partial<Extract<LineState, { kind: 'file' }>> = {}): LineState => ({
  kind: 'file',
  owner: 'root',
  group: 'root',
  mode: 0o644,
  present: false,
  others: 0,
  ...over,
})

async function planAndApply(resource: Resource, conn: FakeConnection, state: LineState, dryRun = false) {
  const change = await resource.plan({ conn, facts: factsWith(resource, state), predicted: new Prediction(), dryRun })
  if (change && !dryRun) await resource.apply(change, { conn, state: { aptListsStale: false } })
  return change
}

describe('withLine', () => {
  it('appends when nothing matches, adding a missing final newline', () => {
    expect(withLine('a\nb\n', 'x = 1')).toBe('a\nb\nx = 1\n')
    expect(withLine('a\nb', 'x = 1')).toBe('a\nb\nx = 1\n')
    expect(withLine('', 'x = 1')).toBe('x = 1\n')
  })
  it('replaces the first matching line in place and removes later matches', () => {
    expect(withLine('a\n#x = 0\nb\nx=2\n', 'x = 1', '^#?\\s*x\\s*=')).toBe('a\nx = 1\nb\n')
    expect(withLine('x = 1\nx=2\n', 'x = 1', '^x\\s*=')).toBe('x = 1\n')
    expect(withLine('a\nx=2', 'x = 1', '^x=')).toBe('a\nx = 1\n')
  })
})

describe('lineInFile plan and apply', () => {
  it('converged: no change, no extra round trip', async () => {
    const conn = new FakeConnection({ '/etc/sysctl.conf': 'vm.swappiness = 10\n' })
    const r = lineInFile({ path: '/etc/sysctl.conf', line: 'vm.swappiness = 10', match: '^#?vm\\.swappiness' })
    expect(await planAndApply(r, conn, fileState({ present: true, others: 0 }))).toBeNull()
    expect(conn.commands).toEqual([])
    expect(conn.writes).toEqual([])
  })

  it('replaces a matching line: reads the file once, writes it atomically with its own owner and mode', async () => {
    const conn = new FakeConnection({ '/etc/sysctl.conf': '# tuning\n#vm.swappiness = 60\nnet.x = 1\n' })
    const r = lineInFile({ path: '/etc/sysctl.conf', line: 'vm.swappiness = 10', match: '^#?vm\\.swappiness' })
    const change = await planAndApply(r, conn, fileState({ owner: 'root', group: 'adm', mode: 0o640, present: false, others: 1 }))
    expect(change).toMatchObject({ resource: 'line:/etc/sysctl.conf:vm.swappiness = 10', action: 'update', touches: ['/etc/sysctl.conf'] })
    expect(change!.summary).toContain('replace the line matching')
    expect(change!.diff).toContain('-#vm.swappiness = 60\n+vm.swappiness = 10\n')
    expect(conn.commands).toEqual(['cat /etc/sysctl.conf'])
    expect(conn.writes).toEqual([
      { path: '/etc/sysctl.conf', content: '# tuning\nvm.swappiness = 10\nnet.x = 1\n', owner: 'root', group: 'adm', mode: 0o640 },
    ])
  })

  it('appends when the line is missing and nothing matches', async () => {
    const conn = new FakeConnection({ '/etc/x.conf': 'a = 1\n' })
    const r = lineInFile({ path: '/etc/x.conf', line: 'b = 2' })
    const change = await planAndApply(r, conn, fileState())
    expect(change!.summary).toBe('update /etc/x.conf (append "b = 2")')
    expect(conn.writes[0]!.content).toBe('a = 1\nb = 2\n')
  })

  it('fixes owner and mode alone without touching the content', async () => {
    const conn = new FakeConnection({ '/etc/x.conf': 'b = 2\n' })
    const r = lineInFile({ path: '/etc/x.conf', line: 'b = 2', mode: 0o600 })
    const change = await planAndApply(r, conn, fileState({ present: true }))
    expect(change!.summary).toBe('update /etc/x.conf (mode 0644 -> 0600)')
    expect(change!.diff).toBeUndefined()
    expect(conn.writes[0]).toMatchObject({ content: 'b = 2\n', mode: 0o600 })
  })

  it('a missing file is an error unless create; a planned file is an uncertain change in the dry run', async () => {
    const conn = new FakeConnection({})
    await expect(planAndApply(lineInFile({ path: '/etc/none', line: 'x' }), conn, { kind: 'absent' })).rejects.toThrow(/does not exist/)
    const created = lineInFile({ path: '/etc/new', line: 'x', create: true, mode: 0o600 })
    expect((await planAndApply(created, conn, { kind: 'absent' }))!.action).toBe('create')
    expect(conn.writes).toEqual([{ path: '/etc/new', content: 'x\n', owner: 'root', group: 'root', mode: 0o600 }])
    const predicted = new Prediction()
    predicted.paths.add('/etc/from-pkg')
    const r = lineInFile({ path: '/etc/from-pkg', line: 'x' })
    const change = await r.plan({ conn, facts: factsWith(r, { kind: 'absent' }), predicted, dryRun: true })
    expect(change!.uncertain).toContain('earlier change')
  })

  it('refuses a directory, a multi-line line and a pattern the host and JavaScript read differently', async () => {
    const conn = new FakeConnection({ '/etc/x': 'x\n' })
    await expect(planAndApply(lineInFile({ path: '/etc/x', line: 'y' }), conn, { kind: 'not-a-file', type: 'directory' })).rejects.toThrow(
      /is a directory/,
    )
    expect(() => lineInFile({ path: '/etc/x', line: 'a\nb' })).toThrow(/newline/)
    expect(() => lineInFile({ path: '/etc/x', line: 'a', match: '(' })).toThrow()
    // The host said one other line matches, JavaScript finds none: an error, never an endless "changed".
    await expect(
      planAndApply(lineInFile({ path: '/etc/x', line: 'x', match: '^zzz' }), conn, fileState({ present: true, others: 1 })),
    ).rejects.toThrow(/grep -P/)
  })
})

describe('lineInFile carries the file it writes on the change', () => {
  it('apply writes what its change planned (not what a later plan read), also through another instance; a change without a plan is refused', async () => {
    const conn = new FakeConnection({ '/etc/x.conf': 'a = 1\n' })
    const r = lineInFile({ path: '/etc/x.conf', line: 'b = 2', mode: 0o644 })
    const plan = (over: Partial<Extract<LineState, { kind: 'file' }>>) =>
      r.plan({ conn, facts: factsWith(r, fileState(over)), predicted: new Prediction(), dryRun: false })
    const first = (await plan({}))!
    conn.files['/etc/x.conf'] = 'b = 2\n'
    const second = (await plan({ present: true, mode: 0o600 }))!
    // The first change, copied and applied by another instance, after the second plan: its own content.
    await lineInFile({ path: '/etc/x.conf', line: 'b = 2', mode: 0o644 }).apply({ ...first }, { conn, state: { aptListsStale: false } })
    await r.apply(second, { conn, state: { aptListsStale: false } })
    expect(conn.writes).toEqual([
      { path: '/etc/x.conf', content: 'a = 1\nb = 2\n', owner: 'root', group: 'root', mode: 0o644 },
      { path: '/etc/x.conf', content: 'b = 2\n', owner: 'root', group: 'root', mode: 0o644 },
    ])
    const { payload: _, ...bare } = first
    await expect(r.apply(bare, { conn, state: { aptListsStale: false } })).rejects.toThrow(
      'line:/etc/x.conf:b = 2: the change carries no line plan',
    )
    expect(conn.writes).toHaveLength(2)
  })
})

describe('lineState fact on a real shell', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mp-line-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const probe = (path: string, line: string, match?: string) => {
    const f = lineState(path, line, match)
    let out: string
    let code = 0
    try {
      out = execFileSync('sh', ['-c', f.command.text], { encoding: 'utf8' })
    } catch (e) {
      const err = e as { stdout: string; status: number }
      out = err.stdout
      code = err.status
    }
    return f.parse(out, code)
  }
  const me = userInfo().username

  it('reports presence, other matching lines, owner and mode', () => {
    const p = join(dir, "it's.conf")
    writeFileSync(p, '#vm.swappiness = 60\nvm.swappiness = 10\nvm.swappiness=1\n', { mode: 0o640 })
    const s = probe(p, 'vm.swappiness = 10', '^#?vm\\.swappiness')
    expect(s).toMatchObject({ kind: 'file', owner: me, mode: 0o640, present: true, others: 2 })
    expect(probe(p, 'vm.swappiness = 99')).toMatchObject({ present: false, others: 0 })
    expect(probe(p, 'vm.swappiness = 10', '^\\d')).toMatchObject({ present: true, others: 0 })
  })
  it('absent, directory, and a bad pattern', () => {
    expect(probe(join(dir, 'none'), 'x')).toEqual({ kind: 'absent' })
    mkdirSync(join(dir, 'd'))
    expect(probe(join(dir, 'd'), 'x')).toEqual({ kind: 'not-a-file', type: 'directory' })
    writeFileSync(join(dir, 'f'), 'x\n')
    expect(() => probe(join(dir, 'f'), 'y', '(')).toThrow(/grep -P rejected/)
  })
  it('parses what the command prints', () => {
    expect(parseLineState('root|adm|640|1|0\n', 0)).toEqual({
      kind: 'file',
      owner: 'root',
      group: 'adm',
      mode: 0o640,
      present: true,
      others: 0,
    })
    expect(() => parseLineState('garbage', 0)).toThrow(/cannot read/)
  })
})
