import { createHash } from 'node:crypto'
import { fileState, type FileState } from '../facts/files.js'
import { maskSensitiveText, unifiedDiff } from '../core/unified-diff.js'
import { Secret } from '../core/secret.js'
import { sh } from '../core/shell.js'
import type { ApplyContext, Change, PlanContext, Resource } from './resource.js'

export interface FileSpec {
  path: string
  content: string | Buffer | Secret
  owner?: string
  group?: string
  mode?: number
  /** Holds secrets: diffs are masked and the default mode is 0600. */
  sensitive?: boolean
}

export const octal = (mode: number) => mode.toString(8).padStart(4, '0')

/** A change that writes the file at `path`: all it touches, what a validating unit's rollback restores, what it makes stale. */
export const fileChange = (
  change: Pick<Change, 'resource' | 'kind' | 'action' | 'summary' | 'diff' | 'uncertain'>,
  path: string,
): Change => ({
  ...change,
  touches: [path],
  backupPaths: [path],
  reach: 'paths',
})

interface FileMeta {
  owner: string
  group: string
  mode: number
}

/** How an existing file's owner and mode differ from what is wanted, for a summary. */
export function metaChanges(have: Partial<FileMeta>, want: FileMeta): string[] {
  const what: string[] = []
  if (have.owner !== want.owner || have.group !== want.group) what.push(`owner ${have.owner}:${have.group} -> ${want.owner}:${want.group}`)
  if (have.mode !== want.mode) what.push(`mode ${octal(have.mode ?? 0)} -> ${octal(want.mode)}`)
  return what
}
const bytesOf = (c: string | Buffer | Secret) => (c instanceof Secret ? Buffer.from(c.reveal()) : Buffer.isBuffer(c) ? c : Buffer.from(c))
const isText = (buf: Buffer) => !buf.includes(0)

/** The apt lists go stale when a source or keyring changes: the next package install updates them first. */
export function makesAptListsStale(path: string): boolean {
  return path.startsWith('/etc/apt/') || path.startsWith('/usr/share/keyrings/')
}

/** A unit file or a drop-in of one: systemd must re-read its units after a change to it. */
export function needsDaemonReload(path: string): boolean {
  return /^\/(?:etc|lib|usr\/lib)\/systemd\/system\/[^/]+(?:\.d\/[^/]+\.conf)?$/.test(path)
}

export function unitNameOf(path: string): string | undefined {
  const m = /^\/(?:etc|lib|usr\/lib)\/systemd\/system\/([^/]+\.(?:service|target|socket|timer))$/.exec(path)
  return m?.[1]
}

/** A file with exact content, owner, group and mode. Written atomically; diffed by hash. */
export function file(spec: FileSpec): Resource {
  const sensitive = spec.sensitive ?? spec.content instanceof Secret
  const owner = spec.owner ?? 'root'
  const group = spec.group ?? 'root'
  const mode = spec.mode ?? (sensitive ? 0o600 : 0o644)
  const fact = fileState(spec.path)
  const id = `file:${spec.path}`
  const content = bytesOf(spec.content)
  const sha = createHash('sha256').update(content).digest('hex')
  const describe = `${octal(mode)} ${owner}:${group}`

  const predict = (ctx: PlanContext) => {
    ctx.predicted.paths.add(spec.path)
    ctx.predicted.factsAfter.set(fact.id, { exists: true, type: 'file', owner, group, mode, sha256: sha } satisfies FileState)
    const unit = unitNameOf(spec.path)
    if (unit) ctx.predicted.units.set(unit, `file ${spec.path}`)
  }

  return {
    id,
    facts: () => [fact],
    async plan(ctx) {
      const state: FileState = ctx.facts.get(fact)
      if (state.exists && state.type !== 'file')
        throw new Error(`${spec.path} exists but is a ${state.type}, not a file; move it away first`)
      if (!state.exists) {
        predict(ctx)
        const text = isText(content) ? content.toString('utf8') : ''
        const diff = text ? unifiedDiff('', sensitive ? maskSensitiveText(text) : text, spec.path) : undefined
        return fileChange(
          {
            resource: id,
            kind: 'file',
            action: 'create',
            summary: `create ${spec.path} (${describe}${isText(content) ? '' : `, ${content.length} bytes`})`,
            diff,
          },
          spec.path,
        )
      }
      const contentDiffers = state.sha256 !== sha
      const metaDiffers = state.owner !== owner || state.group !== group || state.mode !== mode
      if (!contentDiffers && !metaDiffers) return null
      predict(ctx)
      const what = [...(contentDiffers ? ['content'] : []), ...metaChanges(state, { owner, group, mode })]
      let diff: string | undefined
      if (contentDiffers && isText(content) && content.length < 512 * 1024) {
        // Read the old content only when it differs: converged files cost no extra round trip.
        const old = await ctx.conn.run(sh`cat ${spec.path}`, { secretOutput: sensitive, allowFailure: true })
        if (old.code === 0) {
          const [before, after] = sensitive
            ? [maskSensitiveText(old.stdout), maskSensitiveText(content.toString('utf8'))]
            : [old.stdout, content.toString('utf8')]
          diff = unifiedDiff(before, after, spec.path) || (sensitive ? `(a masked value changed in ${spec.path})\n` : undefined)
        }
      }
      return fileChange(
        { resource: id, kind: 'file', action: 'update', summary: `update ${spec.path} (${what.join(', ')})`, diff },
        spec.path,
      )
    },
    async apply(_change, ctx: ApplyContext) {
      await ctx.conn.writeFile({
        path: spec.path,
        content: sensitive && !(spec.content instanceof Secret) ? new Secret(content.toString('utf8'), `file ${spec.path}`) : spec.content,
        owner,
        group,
        mode,
      })
      if (makesAptListsStale(spec.path)) ctx.state.aptListsStale = true
    },
  }
}

export interface DirectorySpec {
  path: string
  owner?: string
  group?: string
  mode?: number
}

export function directory(spec: DirectorySpec): Resource {
  const owner = spec.owner ?? 'root'
  const group = spec.group ?? 'root'
  const mode = spec.mode ?? 0o755
  const fact = fileState(spec.path)
  const id = `dir:${spec.path}`
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      const s = ctx.facts.get(fact)
      if (s.exists && s.type !== 'directory') throw new Error(`${spec.path} exists but is a ${s.type}, not a directory`)
      if (s.exists && s.owner === owner && s.group === group && s.mode === mode) return null
      ctx.predicted.paths.add(spec.path)
      ctx.predicted.factsAfter.set(fact.id, { exists: true, type: 'directory', owner, group, mode } satisfies FileState)
      return {
        resource: id,
        kind: 'directory',
        action: s.exists ? 'update' : 'create',
        summary: s.exists
          ? `update directory ${spec.path} (${octal(s.mode ?? 0)} ${s.owner}:${s.group} -> ${octal(mode)} ${owner}:${group})`
          : `create directory ${spec.path} (${octal(mode)} ${owner}:${group})`,
        touches: [spec.path + '/'],
        // Owner and mode only: a validator has nothing to restore.
        backupPaths: [],
        reach: 'paths',
      }
    },
    async apply(_c, ctx) {
      const q = spec.path
      await ctx.conn.run(
        sh`install -d -o ${owner} -g ${group} -m ${octal(mode)} ${q} && chown ${`${owner}:${group}`} ${q} && chmod ${octal(mode)} ${q}`,
      )
    },
  }
}

export function symlink(spec: { path: string; target: string }): Resource {
  const fact = fileState(spec.path)
  const id = `symlink:${spec.path}`
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      const s = ctx.facts.get(fact)
      if (s.exists && s.type !== 'symlink') throw new Error(`${spec.path} exists but is a ${s.type}, not a symlink`)
      if (s.exists && s.linkTarget === spec.target) return null
      ctx.predicted.paths.add(spec.path)
      ctx.predicted.factsAfter.set(fact.id, {
        exists: true,
        type: 'symlink',
        owner: 'root',
        group: 'root',
        mode: 0o777,
        linkTarget: spec.target,
      } satisfies FileState)
      return {
        resource: id,
        kind: 'symlink',
        action: s.exists ? 'update' : 'create',
        summary: s.exists ? `repoint ${spec.path} -> ${spec.target} (was ${s.linkTarget})` : `link ${spec.path} -> ${spec.target}`,
        touches: [spec.path],
        // A new *-enabled link goes with its rejected file, or Apache's Include finds a dangling link.
        backupPaths: [spec.path],
        reach: 'link',
      }
    },
    async apply(_c, ctx) {
      // Atomic switch: a new link beside the old one, renamed over it.
      const tmp = `${spec.path}.mp-new`
      await ctx.conn.run(sh`ln -sfn ${spec.target} ${tmp} && mv -Tf ${tmp} ${spec.path}`)
    },
  }
}
