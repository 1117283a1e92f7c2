import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmod, mkdir, mkdtemp, readdir, readFile, readlink, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'
import { atomicWriteScript, extractTarScript, remoteCommand } from '../../src/ssh/remote-command.js'
import type { ShellCommand } from '../../src/core/shell.js'
import { Semaphore } from '../../src/core/semaphore.js'
import { tarStream } from '../../src/ssh/tar.js'

const run = promisify(execFile)
const isRoot = process.getuid?.() === 0

/** Run a script with `sh -c`, feeding stdin: what the host does with our wire command (minus ssh). */
function sh(
  script: ShellCommand | string,
  stdin: Buffer | Readable | string = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', typeof script === 'string' ? script : script.text], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.on('error', reject)
    // A script that fails early stops reading: that EPIPE is expected.
    child.stdin.on('error', () => undefined)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    if (typeof stdin === 'string' || Buffer.isBuffer(stdin)) child.stdin.end(stdin)
    else stdin.pipe(child.stdin)
  })
}

const me = async () => ({ user: (await run('id', ['-un'])).stdout.trim(), group: (await run('id', ['-gn'])).stdout.trim() })

describe('the atomic write script (run by a real local sh)', () => {
  let dir: string
  let owner: { user: string; group: string }
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mp-aw-'))
    owner = await me()
  })
  const leftovers = async () => (await readdir(dir)).filter((n) => n.includes('.mp-'))

  it('installs stdin with the mode and owner, leaving no temp file', async () => {
    const path = join(dir, 'homeserver.yaml')
    const content = Buffer.from('server_name: "example.org"\n\u00e9\n')
    const r = await sh(atomicWriteScript({ path, owner: owner.user, group: owner.group, mode: 0o640, size: content.length }), content)
    expect(r).toMatchObject({ code: 0, stderr: '' })
    expect(await readFile(path)).toEqual(content)
    expect((await stat(path)).mode & 0o7777).toBe(0o640)
    expect(await leftovers()).toEqual([])
  })

  it('replaces an existing file by rename (new inode), and handles names with spaces and quotes', async () => {
    const path = join(dir, "it's a file")
    await writeFile(path, 'old')
    const before = (await stat(path)).ino
    const r = await sh(atomicWriteScript({ path, owner: owner.user, group: owner.group, mode: 0o600, size: 3 }), 'new')
    expect(r.code).toBe(0)
    expect(await readFile(path, 'utf8')).toBe('new')
    expect((await stat(path)).ino).not.toBe(before)
    expect(await leftovers()).toEqual([])
  })

  it('a short stdin (connection cut) installs nothing, keeps the old file and removes the temp file', async () => {
    const path = join(dir, 'cut')
    await writeFile(path, 'old content')
    const r = await sh(atomicWriteScript({ path, owner: owner.user, group: owner.group, mode: 0o644, size: 1000 }), 'only part')
    expect(r.code).toBe(3)
    expect(r.stderr).toContain('received 9 of 1000 bytes')
    expect(await readFile(path, 'utf8')).toBe('old content')
    expect(await leftovers()).toEqual([])
  })

  it('refuses a missing parent directory (does not create it) and a directory as destination', async () => {
    const missing = await sh(
      atomicWriteScript({ path: join(dir, 'nope', 'f'), owner: owner.user, group: owner.group, mode: 0o644, size: 1 }),
      'x',
    )
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain(`directory ${join(dir, 'nope')} does not exist`)
    await mkdir(join(dir, 'adir'))
    const isDir = await sh(atomicWriteScript({ path: join(dir, 'adir'), owner: owner.user, group: owner.group, mode: 0o644, size: 1 }), 'x')
    expect(isDir.code).toBe(2)
    expect(isDir.stderr).toContain('is a directory')
  })

  it('an unknown owner fails before the rename and leaves no temp file', async () => {
    const path = join(dir, 'owned')
    const r = await sh(atomicWriteScript({ path, owner: 'no-such-user-mp', group: owner.group, mode: 0o644, size: 1 }), 'x')
    expect(r.code).not.toBe(0)
    await expect(stat(path)).rejects.toThrow()
    expect(await leftovers()).toEqual([])
  })

  it('rejects relative paths, bad names and modes before anything is sent', () => {
    expect(() => atomicWriteScript({ path: 'etc/x', owner: 'root', group: 'root', mode: 0o644, size: 0 })).toThrow(/absolute/)
    expect(() => atomicWriteScript({ path: '/etc/x', owner: 'root;rm', group: 'root', mode: 0o644, size: 0 })).toThrow(/owner/)
    expect(() => atomicWriteScript({ path: '/etc/x', owner: 'root', group: 'root', mode: 0o17777, size: 0 })).toThrow(/mode/)
  })
})

describe('remoteCommand', () => {
  it('wraps in sh -c, with sudo -n or sudo -S (password never on the line) and a host-side timeout', () => {
    expect(remoteCommand('id -un', 'root')).toBe("exec sh -c 'id -un'")
    expect(remoteCommand('id -un', 'sudo')).toBe("exec sudo -n -H -- sh -c 'id -un'")
    expect(remoteCommand('id -un', 'sudo-password')).toBe("exec sudo -k -S -p '' -H -- sh -c 'id -un'")
    expect(remoteCommand('id -un', 'sudo', 30_000)).toBe("exec sudo -n -H -- timeout -k 10 35 sh -c 'id -un'")
  })

  it('a timed root command reports the pid of its `timeout` wrapper on the first stderr line, then runs intact', async () => {
    const wire = remoteCommand(`echo "it's out"; echo err >&2; exit 3`, 'root', 10_000)
    const r = await sh(wire)
    expect(r.code).toBe(3)
    expect(r.stdout).toBe("it's out\n")
    expect(r.stderr).toMatch(/^MP-PID \d+\nerr\n$/)
  })
})

describe('tarStream', () => {
  it('produces an archive GNU tar extracts byte-for-byte: dotfiles, long and unicode names, symlinks, modes', async () => {
    const src = await mkdtemp(join(tmpdir(), 'mp-tar-src-'))
    const long = 'd'.repeat(60) + '/' + 'e'.repeat(70)
    await mkdir(join(src, long), { recursive: true })
    await mkdir(join(src, '.hidden-dir'))
    const files: Record<string, Buffer> = {
      '.dotfile': Buffer.from('secret-ish\n'),
      '.hidden-dir/inner': Buffer.from('inner'),
      empty: Buffer.alloc(0),
      'exactly-512': Buffer.alloc(512, 'a'),
      'big.whl': Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251)),
      [`${long}/${'f'.repeat(120)}.txt`]: Buffer.from('long name'),
      'grüße-日本.txt': Buffer.from('unicode name'),
      'run.sh': Buffer.from('#!/bin/sh\necho hi\n'),
    }
    for (const [name, content] of Object.entries(files)) await writeFile(join(src, name), content)
    await chmod(join(src, 'run.sh'), 0o755)
    await symlink('run.sh', join(src, 'link-to-run'))

    const dest = await mkdtemp(join(tmpdir(), 'mp-tar-dst-'))
    const owner = await me()
    const r = await sh(`tar -x -f - -C ${dest}`, tarStream(src, { owner: owner.user, group: owner.group }))
    expect(r).toMatchObject({ code: 0, stderr: '' })
    for (const [name, content] of Object.entries(files)) {
      expect(
        createHash('sha256')
          .update(await readFile(join(dest, name)))
          .digest('hex'),
        name,
      ).toBe(createHash('sha256').update(content).digest('hex'))
    }
    expect((await stat(join(dest, 'run.sh'))).mode & 0o777).toBe(0o755)
    expect((await stat(join(dest, 'empty'))).mode & 0o777).toBe(0o644)
    expect(await readlink(join(dest, 'link-to-run'))).toBe('run.sh')

    const listing = await sh(`tar -tv -f -`, tarStream(src, { owner: 'synapse', group: 'nogroup', fileMode: 0o640, dirMode: 0o750 }))
    expect(listing.code).toBe(0)
    expect(listing.stdout).toMatch(/^-rw-r----- synapse\/nogroup .* \.dotfile$/m)
    expect(listing.stdout).toMatch(/^drwxr-x--- synapse\/nogroup .* \.hidden-dir\/$/m)
  })

  it.skipIf(!isRoot)('with the extract script, as root, entries get the owner by name', async () => {
    const src = await mkdtemp(join(tmpdir(), 'mp-tar-src-'))
    await writeFile(join(src, 'a'), 'a')
    const parent = await mkdtemp(join(tmpdir(), 'mp-tar-dst-'))
    const dest = join(parent, 'wheelhouse')
    const r = await sh(
      extractTarScript({ dir: dest, owner: 'nobody', group: 'nogroup', dirMode: 0o755 }),
      tarStream(src, { owner: 'nobody', group: 'nogroup' }),
    )
    expect(r).toMatchObject({ code: 0, stderr: '' })
    const { stdout } = await run('stat', ['-c', '%U:%G %a', dest, join(dest, 'a')])
    expect(stdout).toBe('nobody:nogroup 755\nnobody:nogroup 644\n')
    const bad = await sh(
      extractTarScript({ dir: dest, owner: 'no-such-user-mp', group: 'nogroup', dirMode: 0o755 }),
      tarStream(src, { owner: 'x', group: 'y' }),
    )
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('no user no-such-user-mp')
  })
})

describe('Semaphore', () => {
  it('never lets more than the limit in, and serves waiters in order', async () => {
    const sem = new Semaphore(3)
    let inside = 0
    let peak = 0
    const order: number[] = []
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const release = await sem.acquire()
        inside++
        peak = Math.max(peak, inside)
        order.push(i)
        await new Promise((r) => setTimeout(r, 2))
        inside--
        release()
        release() // twice is harmless
      }),
    )
    expect(peak).toBe(3)
    expect(order).toEqual([...Array(20).keys()])
    expect(sem.active).toBe(0)
  })
})
