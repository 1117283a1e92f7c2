/**
 * The verbs' shared selection (src/commands/run-context.ts) and the lazy task registry (tasks/index.ts):
 * a run loads the tasks of the roles its hosts have, in run order, and nothing else.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { bundleOptions } from '../../scripts/bundle.js'
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
  const root = fileURLToPath(new URL('../../', import.meta.url))

  it('runs no dependency and no verb before it knows the verb: --help and --version stay cheap', async () => {
    // The same bundle in its readable form: esbuild names each module in a `// <path>` comment, and wraps a module
    // that runs only when first imported (a verb, a dependency) in __esm or __commonJS. What is not wrapped runs at
    // load; of the wrapped ones, --help and --version must run none (counted by wrapping esbuild's two helpers).
    const dir = mkdtempSync(join(tmpdir(), 'mp-bundle-'))
    const outfile = join(dir, 'cli.cjs')
    await build(bundleOptions(join(root, 'dist/src/cli.js'), outfile, { minifyWhitespace: false }))
    const text = readFileSync(outfile, 'utf8')
    const sections = text.split(/^\/\/ (?=\S+\.[cm]?js(?:on)?$)/m).slice(1)
    const eager = sections.filter((s) => !/^var \w+ = __(esm|commonJS)\(\{$/m.test(s)).map((s) => s.slice(0, s.indexOf('\n')))
    expect(eager).toContain('dist/src/cli.js')
    expect(sections.length).toBeGreaterThan(100)
    const counted = text
      .replace(/^(var __esm = \((\w+),.* function __init\(\) \{)$/m, '$1 note($2);')
      .replace(/^(var __commonJS = \((\w+),.* function __require\(\) \{)$/m, '$1 note($2);')
    expect(counted.match(/ note\((fn|cb)\);$/gm)).toHaveLength(2)
    writeFileSync(outfile, `const note = (o) => (globalThis.mpRan ??= new Set()).add(Object.keys(o)[0]);\n${counted}`)
    const ran = (args: string[]) =>
      execFileSync(
        process.execPath,
        [
          '-e',
          `require(${JSON.stringify(outfile)}).main(${JSON.stringify(args)}, { out() {}, err() {}, env: {} }).then(() => process.stdout.write(JSON.stringify([...(globalThis.mpRan ?? [])])))`,
        ],
        {
          encoding: 'utf8',
        },
      )
    // The counting works: a verb runs its modules.
    expect(JSON.parse(ran(['schema'])) as string[]).toContain('dist/src/commands/schema/index.js')
    for (const args of [['--help'], ['--version'], ['apply', '--help']]) {
      const loaded = [...eager, ...(JSON.parse(ran(args)) as string[])]
      // No zod, yaml, node-ssh, no inventory loader, no task, no verb (commands/verb.js and io.js, which import
      // nothing, are the CLI's own).
      expect(
        loaded.filter((p) => p.startsWith('node_modules/')),
        args.join(' '),
      ).toEqual([])
      expect(loaded.filter((p) => /^dist\/(tasks\/|src\/(inventory\/(load|schema)|engine|ssh|commands\/(?!verb|io\.)))/.test(p))).toEqual(
        [],
      )
    }
  })

  it('is ASCII, so the launcher hands V8 a one-byte string (scripts/code-cache-launcher.js)', () => {
    const bytes = readFileSync(join(root, 'dist/cli/cli.cjs'))
    const at = bytes.findIndex((b) => b > 0x7f)
    expect(at, `non-ASCII at byte ${at}: ${bytes.subarray(Math.max(0, at - 60), at + 20).toString('utf8')}`).toBe(-1)
  })
})
