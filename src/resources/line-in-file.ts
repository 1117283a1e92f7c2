import { defineFact } from '../facts/fact.js'
import { unifiedDiff } from '../core/unified-diff.js'
import { raw, sh } from '../core/shell.js'
import { fileChange, metaChanges, octal } from './file.js'
import { definePlanPayload, type PlanContext, type Resource } from './resource.js'

export interface LineInFileSpec {
  /** An existing file (unless `create`). */
  path: string
  /** The exact line that must be in the file (no newline). */
  line: string
  /**
   * Source of a regular expression for the lines that `line` replaces, e.g. `^#?\s*vm\.swappiness\b`.
   * The first matching line becomes `line`; later matching lines are removed (in most config formats the
   * last setting wins, so leaving one would defeat the edit). Without a match, `line` is appended.
   * The host tests it with `grep -P` (PCRE) and the controller edits with JavaScript's RegExp: keep to
   * what both read the same (anchors, classes, `\s`, `\d`, `\b`, `?`, `+`, `*`, groups, alternation).
   */
  match?: string
  /** Owner, group and mode of the file; unset ones keep the file's own (a new file gets root:root 0644). */
  owner?: string
  group?: string
  mode?: number
  /** Create the file (holding only `line`) when it does not exist; otherwise a missing file is an error. */
  create?: boolean
}

export type LineState =
  | { kind: 'absent' }
  | { kind: 'not-a-file'; type: string }
  | { kind: 'file'; owner: string; group: string; mode: number; present: boolean; others: number }

/** `absent`, `not-a-file|<type>`, or `<owner>|<group>|<octal mode>|<line present 0/1>|<other matching lines>`. */
export function parseLineState(out: string, code: number): LineState {
  const text = out.trim()
  if (text === 'absent') return { kind: 'absent' }
  if (text.startsWith('not-a-file|')) return { kind: 'not-a-file', type: text.slice('not-a-file|'.length) }
  const parts = text.split('|')
  if (code !== 0 || parts.length !== 5) throw new Error(`cannot read the line state (exit ${code}): ${text || '(no output)'}`)
  const [owner, group, mode, present, others] = parts as [string, string, string, string, string]
  if (others === 'bad-pattern') throw new Error('grep -P rejected the match pattern')
  return { kind: 'file', owner, group, mode: parseInt(mode, 8), present: present === '1', others: Number(others) }
}

export const lineState = (path: string, line: string, match?: string) => {
  const p = path
  const l = line
  // Lines that match the pattern but are not exactly `line`: grep -c exits 1 on zero, 2 on a bad pattern.
  const others = match === undefined ? raw`o=0` : sh`o=$(grep -vFx -e ${l} ${p} | grep -cP -e ${match}); [ $? -le 1 ] || o=bad-pattern`
  return defineFact(
    `line:${path}:${line}:${match ?? ''}`,
    sh`s=$(stat -c '%F|%U|%G|%a' ${p} 2>/dev/null) || { echo absent; exit 0; }; case "$s" in 'regular'*) ;; *) echo "not-a-file|\${s%%|*}"; exit 0;; esac; if grep -qFx -e ${l} ${p}; then l=1; else l=0; fi; ${others}; echo "\${s#*|}|$l|$o"`,
    parseLineState,
    { paths: [path], quick: true },
  )
}

/**
 * Rewrite `content` so it holds `line`: the first line matching `match` (or equal to `line`) is
 * replaced, later matching lines removed, else `line` is appended. Pure, for the plan and for tests.
 */
export function withLine(content: string, line: string, match?: string): string {
  const re = match === undefined ? undefined : new RegExp(match)
  const endsWithNewline = content === '' || content.endsWith('\n')
  const lines = content === '' ? [] : (endsWithNewline ? content.slice(0, -1) : content).split('\n')
  const hits = (l: string) => l === line || (re !== undefined && re.test(l))
  const first = lines.findIndex(hits)
  if (first < 0) return `${lines.map((l) => `${l}\n`).join('')}${line}\n`
  const out = lines.filter((l, i) => i <= first || !hits(l))
  out[first] = line
  return out.join('\n') + (endsWithNewline || first === lines.length - 1 ? '\n' : '')
}

/** What apply writes: the whole file, made by the plan from the content it read, and its owner and mode. */
const linePlan = definePlanPayload<{ content: string; owner: string; group: string; mode: number }>('line-in-file', 'line plan')

/**
 * One line present in a config file (Ansible's lineinfile). Converged state costs one fact (grep) in
 * the batched probe; the file is read only when a change is due, and written atomically with its
 * owner, group and mode kept unless given.
 */
export function lineInFile(spec: LineInFileSpec): Resource {
  if (spec.line.includes('\n')) throw new Error(`lineInFile ${spec.path}: the line must not contain a newline`)
  if (spec.match !== undefined) new RegExp(spec.match) // a bad pattern fails when the task is built, not mid-run
  const fact = lineState(spec.path, spec.line, spec.match)
  const id = `line:${spec.path}:${spec.line}`

  const readFile = async (ctx: PlanContext) => {
    const r = await ctx.conn.run(sh`cat ${spec.path}`)
    return r.stdout
  }

  return {
    id,
    facts: () => [fact],
    async plan(ctx) {
      const state = ctx.facts.get(fact)
      if (state.kind === 'not-a-file') throw new Error(`${spec.path} exists but is a ${state.type}, not a file`)
      if (state.kind === 'absent') {
        if (ctx.dryRun && ctx.predicted.paths.has(spec.path)) {
          return fileChange(
            {
              resource: id,
              kind: 'line',
              action: 'update',
              summary: `ensure the line "${spec.line}" in ${spec.path}`,
              uncertain: `${spec.path} comes from an earlier change of this plan`,
            },
            spec.path,
          )
        }
        if (!spec.create) throw new Error(`${spec.path} does not exist: lineInFile edits an existing file (set create: true to create it)`)
        const meta = { owner: spec.owner ?? 'root', group: spec.group ?? 'root', mode: spec.mode ?? 0o644 }
        const created = { content: `${spec.line}\n`, ...meta }
        ctx.predicted.paths.add(spec.path)
        return linePlan.carry(
          fileChange(
            {
              resource: id,
              kind: 'line',
              action: 'create',
              summary: `create ${spec.path} (${octal(meta.mode)} ${meta.owner}:${meta.group}) with the line "${spec.line}"`,
              diff: unifiedDiff('', created.content, spec.path),
            },
            spec.path,
          ),
          created,
        )
      }
      const owner = spec.owner ?? state.owner
      const group = spec.group ?? state.group
      const mode = spec.mode ?? state.mode
      const contentOk = state.present && state.others === 0
      const metaOk = owner === state.owner && group === state.group && mode === state.mode
      if (contentOk && metaOk) return null
      const what: string[] = []
      let content: string
      let diff: string | undefined
      if (contentOk) {
        content = await readFile(ctx) // metadata only: rewritten as is, so the write stays one atomic rename
      } else {
        const old = await readFile(ctx)
        content = withLine(old, spec.line, spec.match)
        if (content === old) {
          throw new Error(
            `lineInFile ${spec.path}: grep -P on the host found lines matching /${spec.match}/ that JavaScript's RegExp does not match; use a pattern both read the same`,
          )
        }
        diff = unifiedDiff(old, content, spec.path)
        what.push(
          state.present
            ? `remove ${state.others} other line(s) matching /${spec.match}/`
            : state.others > 0
              ? `replace the line matching /${spec.match}/ with "${spec.line}"`
              : `append "${spec.line}"`,
        )
      }
      what.push(...metaChanges(state, { owner, group, mode }))
      return linePlan.carry(
        fileChange({ resource: id, kind: 'line', action: 'update', summary: `update ${spec.path} (${what.join(', ')})`, diff }, spec.path),
        { content, owner, group, mode },
      )
    },
    async apply(change, ctx) {
      const { content, owner, group, mode } = linePlan.of(change)
      await ctx.conn.writeFile({ path: spec.path, content, owner, group, mode })
    },
  }
}
