import { defineFact } from '../facts/fact.js'
import { sh, type ShellCommand } from '../core/shell.js'
import type { Resource } from './resource.js'

export interface CommandSpec {
  /** Stable name for plans and logs. */
  name: string
  /** Built with `sh` (values quoted); secrets go in `stdin`. */
  command: ShellCommand
  /** Skip when this read-only command exits 0. */
  unless?: ShellCommand
  /** Skip when this path exists. */
  creates?: string
  stdin?: string
  /** Paths the command changes (for restarts). */
  touches?: string[]
  timeoutMs?: number
  /** Said in the dry run when the guard cannot be evaluated before earlier changes. */
  summary?: string
}

/** A command guarded by a condition: runs only when the guard says it is needed. */
export function command(spec: CommandSpec): Resource {
  if (!spec.unless && !spec.creates)
    throw new Error(`command ${spec.name} needs a guard (unless or creates): unguarded commands are never idempotent`)
  const guard = spec.unless ?? sh`test -e ${spec.creates!}`
  // A `creates` path is a test; an `unless` command may be anything, so it runs beside the rest.
  const fact = defineFact(`guard:${spec.name}:${guard.text}`, guard, (_out, code) => code === 0, { quick: !spec.unless })
  const id = `command:${spec.name}`
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      if (ctx.facts.get(fact)) return null
      // What a command changes is known only by its touches: every fact may be stale, and there is no backup to restore.
      return {
        resource: id,
        kind: 'command',
        action: 'run',
        summary: spec.summary ?? `run ${spec.name}`,
        touches: spec.touches ?? [],
        backupPaths: [],
        reach: 'anything',
      }
    },
    async apply(_c, ctx) {
      await ctx.conn.run(spec.command, { stdin: spec.stdin, timeoutMs: spec.timeoutMs ?? 600_000, what: spec.name })
    },
  }
}
