import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { PART_NAMES, MANIFEST_FILE, MANIFEST_FORMAT, type BackupPart } from '../../synapse/backup/parts.js'

const sha256 = z.string().regex(/^[0-9a-f]{64}$/)

export const manifestSchema = z.strictObject({
  format: z.literal(MANIFEST_FORMAT),
  /** Inventory name of the homeserver host it was taken from. */
  host: z.string(),
  serverName: z.string(),
  createdAt: z.string(),
  synapse: z.strictObject({
    version: z.string(),
    /** schema_version.version of the database at the time of the dump. */
    schemaVersion: z.number().int(),
    /** schema_compat_version: the oldest Synapse schema that can still run on this database. */
    schemaCompatVersion: z.number().int().nullable(),
  }),
  /** Where the dump was taken (the postgres host, which may be another one). */
  database: z.strictObject({ host: z.string(), name: z.string(), postgresVersion: z.string() }),
  /** The signing key's public identity (algorithm:version and the public key), never the private part. */
  signingKey: z.strictObject({ id: z.string(), publicKey: z.string() }),
  encryption: z.strictObject({ tool: z.literal('age'), recipients: z.array(z.string()).min(1) }).nullable(),
  files: z.array(
    z.strictObject({
      part: z.enum(PART_NAMES as [BackupPart, ...BackupPart[]]),
      name: z.string().regex(/^[a-z.-]+$/),
      what: z.string(),
      bytes: z.number().int().nonnegative(),
      sha256,
    }),
  ),
  durationMs: z.number().int().nonnegative(),
})
export type Manifest = z.infer<typeof manifestSchema>

/** A backup directory that cannot be restored, and why: what to do is in the message. */
export class BackupInputError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'BackupInputError'
  }
}

export async function readManifest(dir: string): Promise<Manifest> {
  const path = join(dir, MANIFEST_FILE)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    throw new BackupInputError(
      `${path}: no manifest here; --from must be a directory written by provision backup (or one holding such directories)`,
    )
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    throw new BackupInputError(`${path}: not valid JSON (${(e as Error).message}); the manifest is damaged`)
  }
  const parsed = manifestSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new BackupInputError(
      `${path}: ${issue.path.join('.') || '(top level)'}: ${issue.message}; this is not a ${MANIFEST_FORMAT} manifest`,
    )
  }
  const parts = new Set(parsed.data.files.map((f) => f.part))
  const missing = PART_NAMES.filter((p) => !parts.has(p))
  if (missing.length) throw new BackupInputError(`${path}: the manifest lists no ${missing.join(', ')}; this backup is incomplete`)
  return parsed.data
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** Every file is there, has the size and SHA-256 the manifest says: before anything on a host changes. */
export async function verifyBackupFiles(dir: string, manifest: Manifest, onFile?: (name: string) => void): Promise<void> {
  for (const f of manifest.files) {
    const path = join(dir, f.name)
    onFile?.(f.name)
    const size = await stat(path).then(
      (s) => s.size,
      () => undefined,
    )
    if (size === undefined) throw new BackupInputError(`${path}: missing (the manifest lists it: ${f.what}); nothing was changed`)
    if (size !== f.bytes)
      throw new BackupInputError(
        `${path}: ${size} bytes, the manifest says ${f.bytes}; the file is damaged or cut short; nothing was changed`,
      )
    const digest = await sha256File(path)
    if (digest !== f.sha256)
      throw new BackupInputError(
        `${path}: SHA-256 ${digest} does not match the manifest's ${f.sha256}; the file is damaged or was altered; nothing was changed`,
      )
  }
}
