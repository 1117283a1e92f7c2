/**
 * `provision apply` for the bench: the CLI's own wiring (inventory loader, progress, run log, report)
 * with the bench task instead of the fixed TASKS registry. One process per run, as a user gets it.
 *
 *   node bench/.work/bundle/provision-bench.js --inventory <yaml> --workload bench/workload.json [--dry-run] [--trace]
 *
 * --trace prints, on stderr, milliseconds since process start for each step of each host (connect,
 * lock, fact round trips, plan, release, close) by wrapping the Connection: the profile in bench/README.md.
 */
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { runInventory } from '../../src/engine/run.js'
import { loadInventory } from '../../src/inventory/load.js'
import { createRunLog } from '../../src/report/log.js'
import { createProgress } from '../../src/report/progress.js'
import { renderReport } from '../../src/report/text.js'
import type { Connection, RunOptions } from '../../src/ssh/connection.js'
import { connect } from '../../src/ssh/connect.js'
import { BENCH_ROLE, benchTask, loadWorkload } from './bench-task.js'

const t = () => performance.now().toFixed(1)

/** The size of a command's stdin for the trace (a stream has none up front). */
const stdinNote = (stdin: RunOptions['stdin']) =>
  stdin === undefined ? '' : typeof stdin === 'string' || Buffer.isBuffer(stdin) ? ` (stdin ${stdin.length} B)` : ' (stdin stream)'

function traced(conn: Connection, trace: (msg: string) => void): Connection {
  return {
    host: conn.host,
    async run(command, options) {
      const t0 = performance.now()
      const r = await conn.run(command, options)
      trace(`run ${(performance.now() - t0).toFixed(1)} ms: ${command.text.split('\n')[0]!.slice(0, 60)}${stdinNote(options?.stdin)}`)
      return r
    },
    async writeFile(f) {
      const t0 = performance.now()
      await conn.writeFile(f)
      trace(`writeFile ${(performance.now() - t0).toFixed(1)} ms: ${f.path}`)
    },
    async writeFiles(fs) {
      const t0 = performance.now()
      await conn.writeFiles(fs)
      trace(`writeFiles ${(performance.now() - t0).toFixed(1)} ms: ${fs.length} files`)
    },
    putFile: (...a) => conn.putFile(...a),
    putDirectory: (...a) => conn.putDirectory(...a),
    spawn(command, options) {
      trace(`spawn: ${command.text.slice(0, 40)}`)
      const p = conn.spawn(command, options)
      return {
        write: (d) => p.write(d),
        end: () => {
          trace('spawn: end (lock release)')
          p.end()
        },
        waitForOutput: async (re, ms) => {
          const out = await p.waitForOutput(re, ms)
          // The lock's spawn prints MP-LOCKED, then (apply) the base facts it probes in the same round trip, then the
          // resource facts probed on its channel.
          const probe = /PROBED (\d+)/.exec(re.source)?.[1]
          trace(
            probe === undefined
              ? 'spawn: output seen (lock held)'
              : probe === '1'
                ? 'spawn: output seen (base facts read inside the lock)'
                : `spawn: output seen (probe ${probe} on the lock's channel)`,
          )
          return out
        },
        exited: p.exited.then((r) => (trace('spawn: exited'), r)),
      }
    },
    async close() {
      const t0 = performance.now()
      await conn.close()
      trace(`close ${(performance.now() - t0).toFixed(1)} ms`)
    },
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      inventory: { type: 'string' },
      workload: { type: 'string' },
      'dry-run': { type: 'boolean' },
      trace: { type: 'boolean' },
      parallel: { type: 'string' },
    },
  })
  if (!values.inventory || !values.workload)
    throw new Error('usage: provision-bench --inventory FILE --workload FILE [--dry-run] [--trace]')
  const trace = values.trace ? (host: string, msg: string) => process.stderr.write(`[trace ${t()} ms] ${host}: ${msg}\n`) : undefined
  trace?.('-', 'main() entered (modules loaded)')
  const inventory = await loadInventory(values.inventory)
  for (const host of inventory.hosts) host.roles = [BENCH_ROLE]
  const tasks = [benchTask(loadWorkload(values.workload))]
  trace?.('-', 'inventory loaded')
  const log = await createRunLog(undefined)
  const progress = await createProgress(
    inventory.hosts.map((h) => h.name),
    { verbose: false, quiet: false },
  )
  const report = await runInventory(inventory, {
    mode: values['dry-run'] ? 'dry-run' : 'apply',
    tasks,
    parallel: values.parallel ? Number(values.parallel) : 25,
    connect: async (host) => {
      trace?.(host.name, 'connect start')
      const conn = await connect(host, { log: (e) => log.event(e), resolveHost: (name) => inventory.hosts.find((h) => h.name === name) })
      trace?.(host.name, 'connected')
      return trace ? traced(conn, (m) => trace(host.name, m)) : conn
    },
    onEvent: (e) => {
      progress.event(e)
      log.event({ msg: e.message, host: e.host, task: e.task })
    },
    onHostDone: (h) => {
      trace?.(h.host, `host done (${h.status}, ${h.durationMs} ms in runHost)`)
      progress.hostDone(h.host, h.status === 'failed')
    },
  })
  await progress.done()
  log.close()
  process.stdout.write(renderReport(report, { color: false, diffs: false }))
  trace?.('-', 'report written')
  // Controller CPU (user + system) of the whole process: unlike wall time, load on the machine barely moves it.
  const cpu = process.cpuUsage()
  trace?.(
    '-',
    `cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms (user ${(cpu.user / 1000).toFixed(0)}, system ${(cpu.system / 1000).toFixed(0)})`,
  )
  return report.totals.failedHosts > 0 ? 2 : 0
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(`provision-bench: ${error instanceof Error ? error.stack : String(error)}\n`)
    process.exitCode = 1
  },
)
