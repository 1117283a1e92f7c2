import { execFileSync } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { signingKeyIdentity } from '../../src/resources/homeserver-state.js'
import { partCommand } from '../../src/synapse/backup/parts.js'
import { BackupInputError, readManifest, verifyBackupFiles, type Manifest } from '../../src/commands/backup/manifest.js'
import { renderBackupScript, renderBackupTimer } from '../../tasks/backup/templates.js'
import { matrixSettings } from './fixtures/matrix-settings.js'
import { writeBackupDir } from './fixtures/backup-dir.js'

const backupDir = (files: Record<string, string>, edit?: (m: Manifest) => void) => writeBackupDir({ files, ...(edit ? { edit } : {}) })

describe('backup manifest', () => {
  it('verifies a whole backup', async () => {
    const dir = await backupDir({})
    await expect(verifyBackupFiles(dir, await readManifest(dir))).resolves.toBeUndefined()
  })
  it('refuses a changed byte, a missing file, an incomplete or foreign manifest, each saying which file and what to do', async () => {
    const changed = await backupDir({})
    await writeFile(join(changed, 'media.tar'), 'media contenT')
    await expect(verifyBackupFiles(changed, await readManifest(changed))).rejects.toThrow(
      /media\.tar: SHA-256 [0-9a-f]{64} does not match the manifest's [0-9a-f]{64}; the file is damaged or was altered; nothing was changed/,
    )
    const short = await backupDir({})
    await writeFile(join(short, 'database.dump'), 'x')
    await expect(verifyBackupFiles(short, await readManifest(short))).rejects.toThrow(/database\.dump: 1 bytes, the manifest says 16/)
    const incomplete = await backupDir({}, (m) => (m.files = m.files.filter((f) => f.part !== 'secrets')))
    await expect(readManifest(incomplete)).rejects.toThrow(/lists no secrets; this backup is incomplete/)
    const foreign = await backupDir({}, (m) => ((m as { format: string }).format = 'something/2'))
    await expect(readManifest(foreign)).rejects.toThrow(BackupInputError)
    await expect(readManifest(join(foreign, 'nope'))).rejects.toThrow(/no manifest here/)
  })
})

describe('signing key identity', () => {
  it("derives the public key Synapse publishes from the file's seed (RFC 8032 test vector 1)", () => {
    const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex').toString('base64')
    const id = signingKeyIdentity(`ed25519 a_AbCd ${seed}\n`)
    expect(id.id).toBe('ed25519:a_AbCd')
    expect(Buffer.from(id.publicKey, 'base64').toString('hex')).toBe('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a')
    expect(id.publicKey).not.toMatch(/=$/)
  })
  it('refuses what is not a Synapse signing key', () => {
    expect(() => signingKeyIdentity('hello')).toThrow(/ed25519 <version> <key>/)
  })
})

describe('scheduled backup script', () => {
  const vars = matrixSettings()
  it('is valid sh (dash -n), with the same part commands as provision backup', () => {
    for (const remoteDatabase of [undefined, { address: '10.0.0.10' }]) {
      const script = renderBackupScript({ hostName: 'hs', vars, remoteDatabase })
      execFileSync('dash', ['-n'], { input: script })
      expect(script).toContain(partCommand('media', 'synapse').text)
      expect(script).toContain('--exclude-table-data=e2e_one_time_keys_json')
      expect(script).not.toContain(vars.postgres.password.kind === 'value' ? vars.postgres.password.secret.reveal() : 'never')
    }
    expect(renderBackupScript({ hostName: 'hs', vars, remoteDatabase: { address: '10.0.0.10' } })).toContain(
      'PGPASSFILE=/var/lib/matrix-provision/backup.pgpass',
    )
    expect(renderBackupTimer('*-*-* 03:30:00')).toContain('OnCalendar=*-*-* 03:30:00\nPersistent=true')
  })
})

describe('backup file writer', () => {
  it('stores what arrives, hashing the bytes as stored; with age, only the identity decrypts it', async () => {
    const { BackupFileWriter } = await import('../../src/commands/backup/stored-file.js')
    const { createHash, randomBytes } = await import('node:crypto')
    const { readFile, stat } = await import('node:fs/promises')
    const dir = await mkdtemp(join(tmpdir(), 'mp-writer-'))
    const data = randomBytes(3 * 1024 * 1024 + 7)
    const plain = new BackupFileWriter(join(dir, 'plain'))
    for (let i = 0; i < data.length; i += 65536) plain.input.write(data.subarray(i, i + 65536))
    const stored = await plain.finish()
    expect(stored).toEqual({ bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') })
    expect((await stat(join(dir, 'plain'))).mode & 0o777).toBe(0o600)
    // Encryption needs only the recipient (public key); `age` comes from Debian's package (.ci/run installs it).
    execFileSync('age-keygen', ['-o', join(dir, 'identity')], { stdio: 'ignore' })
    const recipient = execFileSync('age-keygen', ['-y', join(dir, 'identity')], { encoding: 'utf8' }).trim()
    const sealed = new BackupFileWriter(join(dir, 'sealed.age'), { recipients: [recipient] })
    sealed.input.end(data)
    const enc = await sealed.finish()
    const onDisk = await readFile(join(dir, 'sealed.age'))
    expect(enc).toEqual({ bytes: onDisk.length, sha256: createHash('sha256').update(onDisk).digest('hex') })
    expect(onDisk.includes(data.subarray(0, 64))).toBe(false)
    expect(
      execFileSync('age', ['--decrypt', '--identity', join(dir, 'identity'), join(dir, 'sealed.age')], { maxBuffer: 1 << 26 }).equals(data),
    ).toBe(true)
  })
})
