/**
 * The verbs' shared selection (src/commands/run-context.ts) and the lazy task registry (tasks/index.ts):
 * a run loads the tasks of the roles its hosts have, in run order, and nothing else.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { selectHosts } from '../../src/commands/run-context.js'
import { UsageError } from '../../src/commands/verb.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import { ROLES } from '../../src/inventory/roles.js'
import { loadTasks, TASKS } from '../../tasks/index.js'

const inventory = await loadInventoryFromString(
  'defaults:\n  vars: { serverName: example.org }\nhosts:\n  db: { address: 203.0.113.11, roles: [postgres] }\n  web: { address: 203.0.113.10, roles: [apache, monitoring] }\n',
  '/tmp/commands.yaml',
)

describe('the roles of a run', () => {
  it('are the roles its hosts have, in run order', () => {
    expect(selectHosts(inventory, [], []).roles).toEqual(['postgres', 'apache', 'monitoring'])
    expect(selectHosts(inventory, ['web'], []).roles).toEqual(['apache', 'monitoring'])
    expect(selectHosts(inventory, ['postgres'], []).inventory.hosts.map((h) => h.name)).toEqual(['db'])
  })

  it('--tasks narrows them; a task no host of the run has is not loaded', () => {
    expect(selectHosts(inventory, [], ['monitoring', 'redis']).roles).toEqual(['monitoring'])
    expect(selectHosts(inventory, ['db'], ['apache']).roles).toEqual([])
  })

  it('an unknown task or --limit is bad usage, naming what there is', () => {
    expect(() => selectHosts(inventory, [], ['synapse2'])).toThrow(UsageError)
    expect(() => selectHosts(inventory, [], ['synapse2'])).toThrow(`--tasks: unknown task "synapse2"; tasks are: ${ROLES.join(', ')}`)
    expect(() => selectHosts(inventory, ['mail'], [])).toThrow(
      '--limit: "mail" is neither a host of /tmp/commands.yaml (db, web) nor a role',
    )
  })
})

describe('the task registry', () => {
  it('has one entry per role, in the roles order', () => {
    expect(TASKS.map((t) => t.name)).toEqual([...ROLES])
  })

  it('loads the tasks asked for, in run order, each the task of its role', async () => {
    const tasks = await loadTasks(['monitoring', 'postgres'])
    expect(tasks.map((t) => t.name)).toEqual(['postgres', 'monitoring'])
    expect((await loadTasks()).map((t) => t.name)).toEqual([...ROLES])
  })
})

describe("the bundled CLI (dist/cli, built by the unit project's global setup)", () => {
  const dist = fileURLToPath(new URL('../../dist/cli/', import.meta.url))
  /** Every file the entry loads before it knows the verb: its static imports, and theirs. */
  const staticClosure = (file: string, seen = new Set<string>()): Set<string> => {
    if (seen.has(file)) return seen
    seen.add(file)
    for (const m of readFileSync(dist + file, 'utf8').matchAll(/^(?:import|export)\s[^'"]*?from\s*"\.\/([^"]+)"|^import\s+"\.\/([^"]+)"/gm))
      staticClosure((m[1] ?? m[2])!, seen)
    return seen
  }

  it('loads no dependency and no verb before it knows the verb: --help and --version stay cheap', () => {
    const files = [...staticClosure('cli.js')]
    const text = files.map((f) => readFileSync(dist + f, 'utf8')).join('\n')
    expect(files.length).toBeGreaterThan(1)
    // esbuild names each bundled module in a comment: no zod, yaml, node-ssh, no inventory loader, no task, no verb
    // (commands/verb.js and io.js, which import nothing, are the CLI's own).
    expect(text.match(/^\/\/ node_modules\/.*$/gm) ?? []).toEqual([])
    expect(text.match(/^\/\/ dist\/(tasks\/.*|src\/(inventory\/(load|schema)|engine|ssh|commands\/(?!verb|io\.)).*)$/gm) ?? []).toEqual([])
    expect(text.length).toBeLessThan(50_000)
  })
})
