import { createHash } from 'node:crypto'
import { fileState, type FileState } from '../../src/facts/files.js'
import { file } from '../../src/resources/file.js'
import { Secret } from '../../src/core/secret.js'
import type { Resource } from '../../src/resources/resource.js'
import { sh } from '../../src/core/shell.js'

export interface SigningKeySpec {
  path: string
  /** The virtualenv's python, and the --config-path arguments the unit passes. */
  python: string
  configArgs: readonly string[]
  owner: string
  group: string
  mode: number
  /**
   * apt method: the package's unit runs `--generate-keys` before every start, and Synapse creates the
   * key 0640 (synapse/config/key.py opens it with mode 0o640), so the install makes it before we can.
   */
  generatedByPackage?: string
}

const octal = (mode: number) => mode.toString(8).padStart(4, '0')

/**
 * The server's signing key: generated once by Synapse itself (never by us: its content is Synapse's
 * format and identity) and kept across runs; its owner, group and mode are ours to hold, whoever
 * made it. The after-check "signing key readable only by matrix-synapse" checks what this sets.
 */
export function signingKey(spec: SigningKeySpec): Resource {
  const fact = fileState(spec.path)
  const id = `signing-key:${spec.path}`
  const want = `${octal(spec.mode)} ${spec.owner}:${spec.group}`
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      const s: FileState = ctx.facts.get(fact)
      if (s.exists && s.type !== 'file')
        throw new Error(`${spec.path} exists but is a ${s.type}, not the signing key file; move it away first`)
      if (s.exists && s.owner === spec.owner && s.group === spec.group && s.mode === spec.mode) return null
      ctx.predicted.paths.add(spec.path)
      ctx.predicted.factsAfter.set(fact.id, {
        exists: true,
        type: 'file',
        owner: spec.owner,
        group: spec.group,
        mode: spec.mode,
        sha256: s.sha256,
      } satisfies FileState)
      // Owner and mode only: no backup (no validator reads the key, and it is secret). Synapse's
      // --generate-keys may write other missing files, so a generation reaches anything.
      const change = { resource: id, kind: 'file' as const, touches: [spec.path], backupPaths: [], reach: 'paths' as const }
      if (s.exists)
        return {
          ...change,
          action: 'update',
          summary: `set the signing key ${spec.path} to ${want} (it is ${octal(s.mode ?? 0)} ${s.owner}:${s.group})`,
        }
      if (spec.generatedByPackage && ctx.predicted.packages.has(spec.generatedByPackage)) {
        return {
          ...change,
          action: 'update',
          summary: `set the signing key ${spec.path} to ${want} (the unit of ${spec.generatedByPackage} generates it 0640 when the install starts it)`,
        }
      }
      return {
        ...change,
        action: 'create',
        reach: 'anything',
        summary: `generate the server's signing key ${spec.path} (${want}, kept across runs)`,
      }
    },
    async apply(_change, ctx) {
      const { path, owner, group, mode } = spec
      // Run as the service user: Synapse writes the key into a directory it owns.
      const script = sh`cd /var/lib/matrix-synapse && umask 077 && { [ -e ${path} ] || runuser -u ${owner} -- ${spec.python} -m synapse.app.homeserver ${spec.configArgs} --generate-keys; } && chown ${`${owner}:${group}`} ${path} && chmod ${octal(mode)} ${path}`
      await ctx.conn.run(script, { what: `the signing key ${path}` })
    },
  }
}

/**
 * The signing key from the inventory (synapse.signingKey): every host of a homeserver whose workers
 * run on several hosts gets the same key, a 0600 file of the service user. A host that already holds
 * another key is refused rather than given a new identity: the server's key is kept, never replaced.
 */
export function signingKeyFromSecret(spec: { path: string; key: Secret; owner: string; group: string }): Resource {
  const content = new Secret(`${spec.key.reveal().trim()}\n`, `signing key ${spec.path}`)
  const inner = file({ path: spec.path, content, owner: spec.owner, group: spec.group, mode: 0o600, sensitive: true })
  const sha = createHash('sha256').update(content.reveal()).digest('hex')
  return {
    ...inner,
    id: `signing-key:${spec.path}`,
    async plan(ctx) {
      const s: FileState = ctx.facts.get(fileState(spec.path))
      if (s.exists && s.type === 'file' && s.sha256 !== undefined && s.sha256 !== sha) {
        throw new Error(
          `${spec.path} holds another signing key than synapse.signingKey: the server's identity is not replaced; put the key of this host into synapse.signingKey (or move the file away on purpose)`,
        )
      }
      const change = await inner.plan(ctx)
      return change
        ? {
            ...change,
            resource: `signing-key:${spec.path}`,
            summary: change.summary.replace(/^create /, 'write the signing key from synapse.signingKey to '),
          }
        : null
    },
  }
}
