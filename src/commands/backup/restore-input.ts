/** The backup as the restore reads it on the controller: which directory, and each part as a stream (decrypted by age when encrypted). */
import { createReadStream, existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { MANIFEST_FILE, type BackupPart } from '../../synapse/backup/parts.js'
import { ageDecrypt, childDone } from './age.js'
import { BackupInputError, type Manifest } from './manifest.js'

/** `--from`: a backup directory, or a directory of backups (then the newest taken from this host). */
export async function findBackupDir(from: string, hostName: string): Promise<string> {
  const dir = resolve(from)
  if (!existsSync(dir)) throw new BackupInputError(`--from ${from}: no such directory`)
  if (existsSync(join(dir, MANIFEST_FILE))) return dir
  const entries = (await readdir(dir, { withFileTypes: true })).filter(
    (e) => e.isDirectory() && !e.name.startsWith('.') && existsSync(join(dir, e.name, MANIFEST_FILE)),
  )
  const own = entries
    .filter((e) => e.name.startsWith(`${hostName}-`))
    .map((e) => e.name)
    .sort()
  if (own.length) return join(dir, own[own.length - 1]!)
  if (entries.length)
    throw new BackupInputError(
      `--from ${from}: no backup of ${hostName} here (found ${entries.map((e) => e.name).join(', ')}); name the backup directory itself`,
    )
  throw new BackupInputError(
    `--from ${from}: no ${MANIFEST_FILE} here nor in a subdirectory; --from names a directory written by provision backup`,
  )
}

/** A part of the backup as a stream: the file, decrypted by age when the backup is encrypted. */
export function openPart(
  dir: string,
  manifest: Manifest,
  part: BackupPart,
  identity: string | undefined,
  onBytes: (n: number) => void,
): { stream: Readable; done: Promise<unknown> } {
  const entry = manifest.files.find((f) => f.part === part)!
  let read = 0
  const counted = createReadStream(join(dir, entry.name), { highWaterMark: 256 * 1024 }).pipe(
    new Transform({
      transform(chunk: Buffer, _e, cb) {
        read += chunk.length
        onBytes(read)
        cb(null, chunk)
      },
    }),
  )
  if (!manifest.encryption) return { stream: counted, done: Promise.resolve() }
  if (!identity)
    throw new BackupInputError('this backup is encrypted: pass --identity FILE (an age identity matching one of its recipients)')
  const age = ageDecrypt(identity)
  const done = Promise.all([pipeline(counted, age.stdin!), childDone(age, `age --decrypt of ${entry.name}`)])
  done.catch(() => undefined)
  return { stream: age.stdout!, done }
}

/** A small part (the signing key, the secrets) whole in memory. */
export async function readPart(dir: string, manifest: Manifest, part: BackupPart, identity: string | undefined): Promise<Buffer> {
  const { stream, done } = openPart(dir, manifest, part, identity, () => undefined)
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  await done
  return Buffer.concat(chunks)
}
