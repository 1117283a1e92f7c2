#!/usr/bin/env node
// Issue 13: the one-of-each worker set (16 Synapse processes) on the sandbox host, and Apache sized
// for long-polls.
//
//   1. `provision sandbox` (its own container, ports 2361/8361), then the inventory switched to
//      workers.preset one-of-each and apache.maxClients BENCH_MAX_CLIENTS (default 2500), applied.
//   2. Converged full-stack re-runs through the real CLI (bin/provision.js, spawn to exit), median of
//      BENCH_RUNS (default 5), BENCH_SETTLE_S (default 60) after the switch; each must say "no changes".
//   3. A bounded load run: BENCH_CLIENTS (default 2000) concurrent /sync long-polls through Apache
//      (HTTPS to the published port on loopback), each held BENCH_HOLD_S (default 60) seconds by
//      Synapse (timeout=...). The first plain request right behind the opening herd is reported on its
//      own; then, BENCH_PROBE_SETTLE_S (default 10) later, while they are held: a plain
//      /_matrix/client/versions, timed BENCH_PROBES times, and the memory of Apache and of Synapse's processes. Then every request is
//      aborted and the sandbox removed: the run stops by itself (BENCH_DEADLINE_S, default 900 s, kills it).
//   BENCH_DEFAULT=1 skips 1-2: the load run on the sandbox as provisioned (the default inventory: guide
//   preset, apache.maxClients 1000), where the long-polls over the proxy's cap are answered 503 at once
//   and a plain request must still answer in under 1 s (issue 21). Results: bench/results/long-poll-reserve.json.
//   4. BENCH_CONTRAST=1 also runs the load with Debian's MPM default capacity (maxClients 150) and 400
//      clients, to show the freeze this sizing removes.
//
// Results: bench/results/workers.json and a summary on stdout. Needs root, Docker, and ~3 GB of RAM.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { request, Agent } from 'node:https'
import { cpus, loadavg, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseDocument } from 'yaml'
import { measure } from './lib/measure.js'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const env = process.env
const CLIENTS = Number(env.BENCH_CLIENTS ?? 2000)
const HOLD_S = Number(env.BENCH_HOLD_S ?? 60)
const PROBES = Number(env.BENCH_PROBES ?? 10)
const PROBE_SETTLE_S = Number(env.BENCH_PROBE_SETTLE_S ?? 10)
const RUNS = Number(env.BENCH_RUNS ?? 5)
const MAX_CLIENTS = Number(env.BENCH_MAX_CLIENTS ?? 2500)
const DEADLINE_S = Number(env.BENCH_DEADLINE_S ?? 900)
const dir = join(root, 'bench/.work/workers')
const SSH_PORT = env.SANDBOX_SSH_PORT ?? '2361'
const HTTPS_PORT = Number(env.SANDBOX_HTTPS_PORT ?? 8361)
const NAME = env.SANDBOX_NAME ?? 'mp-bench-workers'
const sandboxEnv = { ...env, SANDBOX_NAME: NAME, SANDBOX_DIR: dir, SANDBOX_SSH_PORT: SSH_PORT, SANDBOX_HTTPS_PORT: String(HTTPS_PORT) }
const cli = join(root, 'bin/provision.js')
const DEFAULT_ONLY = env.BENCH_DEFAULT === '1'
const OUT = join(root, DEFAULT_ONLY ? 'bench/results/long-poll-reserve.json' : 'bench/results/workers.json')
const say = (text) => process.stderr.write(`[bench workers] ${text}\n`)
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const r3 = (x) => Math.round(x * 1000) / 1000

// The run stops by itself, whatever happens.
const deadline = setTimeout(() => {
  say(`deadline of ${DEADLINE_S} s reached: removing the sandbox and stopping`)
  down()
  process.exit(3)
}, DEADLINE_S * 1000)

function down() {
  spawnSync('node', [cli, 'sandbox', '--down'], { cwd: root, env: sandboxEnv, stdio: 'ignore' })
}

const inContainer = (script) => execFileSync('docker', ['exec', NAME, 'sh', '-c', script], { encoding: 'utf8' })

function setInventory(values) {
  const file = join(dir, 'inventory.yaml')
  const doc = parseDocument(readFileSync(file, 'utf8'))
  for (const [path, value] of values) doc.setIn(['hosts', 'sandbox', 'vars', ...path], value)
  writeFileSync(file, doc.toString())
  return file
}

function apply(inventory, label) {
  const r = spawnSync('node', [cli, '--inventory', inventory], { cwd: root, env: sandboxEnv, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${label} failed:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`)
  return r.stdout
}

/** Resident memory (MiB) of the processes a `ps` selector picks, summed, and their count. */
function memory(selector) {
  const rss = inContainer(`ps ${selector} -o rss= || true`).trim().split('\n').filter(Boolean).map(Number)
  return { processes: rss.length, rss_mib: Math.round(rss.reduce((a, b) => a + b, 0) / 1024) }
}

function call(agent, ca, method, path, { token, body, timeoutMs = 30_000 } = {}) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const started = performance.now()
    const req = request(
      {
        host: '127.0.0.1',
        port: HTTPS_PORT,
        servername: 'matrix.sandbox.test',
        ca,
        agent,
        method,
        path,
        headers: {
          host: 'matrix.sandbox.test',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(payload ? { 'content-type': 'application/json' } : {}),
        },
        timeout: timeoutMs,
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode, text, ms: performance.now() - started }))
      },
    )
    req.on('error', reject)
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)))
    if (payload) req.write(payload)
    req.end()
  })
}

/** Hold `clients` long-polls open through Apache, time plain requests meanwhile, then abort them all. */
async function loadRun(label, clients, holdS) {
  const ca = readFileSync(join(dir, 'ca.pem'))
  const password = readFileSync(join(dir, 'admin-password'), 'utf8').trim()
  const one = new Agent({ keepAlive: false })
  const login = await call(one, ca, 'POST', '/_matrix/client/v3/login', {
    body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'admin' }, password },
  })
  if (login.status !== 200) throw new Error(`login failed: ${login.status} ${login.text}`)
  const token = JSON.parse(login.text).access_token
  const first = await call(one, ca, 'GET', '/_matrix/client/v3/sync?timeout=0', { token })
  const since = JSON.parse(first.text).next_batch
  // One connection per long-poll, as separate clients have; distinct filters, so Synapse does not
  // answer them all from one cached response.
  const polls = new Agent({ keepAlive: false, maxSockets: Infinity })
  const pending = []
  let answeredEarly = 0
  let failed = 0
  let settled = 0
  const statuses = {}
  say(`${label}: opening ${clients} long-polls (timeout ${holdS} s)`)
  const openStarted = performance.now()
  for (let i = 0; i < clients; i++) {
    const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1 + (i % 50) } }, presence: { limit: i } }))
    pending.push(
      call(polls, ca, 'GET', `/_matrix/client/v3/sync?since=${encodeURIComponent(since)}&timeout=${holdS * 1000}&filter=${filter}`, {
        token,
        timeoutMs: (holdS + 60) * 1000,
      })
        .then((r) => {
          if (r.ms < (holdS - 5) * 1000) answeredEarly++
          if (r.status !== 200) failed++
          statuses[r.status] = (statuses[r.status] ?? 0) + 1
        })
        .catch(() => failed++)
        .finally(() => settled++),
    )
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 50))
  }
  const openedMs = performance.now() - openStarted
  // Wait until Apache holds them (established connections on 443 inside the container).
  let held = 0
  for (let t = 0; t < 60; t++) {
    held = Number(inContainer("ss -Htn state established '( sport = :443 )' | wc -l").trim())
    // Long-polls over the proxy's cap are answered (503) at once: they are not held.
    if (held + settled >= clients * 0.98) break
    await new Promise((r) => setTimeout(r, 1000))
  }
  say(
    `${label}: ${held} connections held by Apache after ${Math.round(openedMs)} ms of opening; answered so far: ${JSON.stringify(statuses)}`,
  )
  const answeredAtOnce = { ...statuses }
  // The first request right behind the herd meets 2,000 TLS handshakes and /sync setups still in progress
  // on the same 2 cores (the bench's own client included): reported on its own, then the held state is
  // probed after PROBE_SETTLE_S.
  const herd = await call(new Agent({ keepAlive: false }), ca, 'GET', '/_matrix/client/versions', { timeoutMs: 60_000 }).catch(() => ({
    ms: 60_000,
  }))
  await new Promise((r) => setTimeout(r, PROBE_SETTLE_S * 1000))
  const probes = []
  for (let i = 0; i < PROBES; i++) {
    const r = await call(new Agent({ keepAlive: false }), ca, 'GET', '/_matrix/client/versions', { timeoutMs: 60_000 }).catch((e) => ({
      status: 0,
      ms: 60_000,
      text: String(e),
    }))
    probes.push(r.ms)
    await new Promise((res) => setTimeout(res, 300))
  }
  // The probes count only while every long-poll is still held (none answered by its timeout yet).
  const probesWithinHold = performance.now() - openStarted < (holdS - 2) * 1000
  const apache = memory('-C apache2')
  const synapse = memory('-u matrix-synapse')
  const threads = Number(inContainer("ps -C apache2 -o nlwp= | awk '{s+=$1} END {print s}'").trim())
  // Done: abort every long-poll (the run does not wait for their timeout).
  polls.destroy()
  await Promise.race([Promise.allSettled(pending), new Promise((r) => setTimeout(r, 10_000))])
  const result = {
    label,
    clients,
    hold_s: holdS,
    held_connections: held,
    answered_early: answeredEarly,
    answered_while_opening_by_status: answeredAtOnce,
    answered_by_status: statuses,
    failed_or_aborted: failed,
    open_ms: Math.round(openedMs),
    first_request_behind_the_herd_ms: Math.round(herd.ms),
    probe_settle_s: PROBE_SETTLE_S,
    probes_within_hold: probesWithinHold,
    plain_request_ms: { median: Math.round(median(probes)), max: Math.round(Math.max(...probes)), all: probes.map(Math.round) },
    apache: { ...apache, threads },
    synapse,
  }
  say(
    `${label}: first request behind the herd ${result.first_request_behind_the_herd_ms} ms; held, ${PROBE_SETTLE_S} s later: plain request median ${result.plain_request_ms.median} ms, max ${result.plain_request_ms.max} ms; Apache ${apache.processes} processes / ${threads} threads ${apache.rss_mib} MiB; Synapse ${synapse.processes} processes ${synapse.rss_mib} MiB`,
  )
  return result
}

async function main() {
  execFileSync('npm', ['run', '-s', 'build'], { cwd: root, stdio: 'inherit' })
  mkdirSync(dir, { recursive: true })
  say('provisioning the sandbox host (guide preset) once')
  const up = spawnSync('node', [cli, 'sandbox'], { cwd: root, env: sandboxEnv, encoding: 'utf8' })
  if (up.status !== 0) throw new Error(`provision sandbox failed:\n${up.stdout}\n${up.stderr}`)
  const results = { machine: { cpus: cpus().length, mem_gib: Math.round(totalmem() / 2 ** 30), loadavg_1m_before: loadavg()[0] }, runs: [] }
  if (DEFAULT_ONLY) {
    try {
      results.commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim()
      results.mpm = inContainer(
        'grep -E "^ *(ServerLimit|ThreadsPerChild|MaxRequestWorkers)" /etc/apache2/conf-available/matrix-mpm.conf; grep -E "BalancerMember" /etc/apache2/sites-available/matrix.conf',
      )
      await new Promise((r) => setTimeout(r, Number(env.BENCH_SETTLE_S ?? 30) * 1000))
      results.runs.push(await loadRun('default inventory (guide preset, apache.maxClients 1000)', CLIENTS, HOLD_S))
    } finally {
      results.loadavg_1m_after = loadavg()[0]
      writeFileSync(OUT, JSON.stringify(results, null, 2) + '\n')
      down()
      clearTimeout(deadline)
    }
    process.stdout.write(JSON.stringify(results, null, 2) + '\n')
    return
  }
  try {
    const inventory = setInventory([
      [['workers'], { preset: 'one-of-each' }],
      [['apache', 'maxClients'], MAX_CLIENTS],
    ])
    let t = performance.now()
    apply(inventory, 'switch to one-of-each')
    results.switch_to_one_of_each_s = r3((performance.now() - t) / 1000)
    say(`switched to one-of-each in ${results.switch_to_one_of_each_s} s`)
    // Freshly started workers spend their first minute on start-up jobs, and the converged run's
    // after-checks ask each of them for its metrics page: measure the steady host, not the start-up.
    const SETTLE_S = Number(env.BENCH_SETTLE_S ?? 60)
    say(`letting the 16 processes settle for ${SETTLE_S} s`)
    await new Promise((r) => setTimeout(r, SETTLE_S * 1000))
    results.settle_s = SETTLE_S
    const walls = []
    // Beside the sandbox's directory, which `sandbox --down` removes: the logs outlive the run.
    const logs = join(root, 'bench/.work/workers-logs')
    mkdirSync(logs, { recursive: true })
    for (let r = 0; r < RUNS; r++) {
      const log = join(logs, `converged-${r + 1}.log`)
      const m = await measure('node', [cli, '--inventory', inventory], { cwd: root, env: sandboxEnv, log })
      const text = readFileSync(log, 'utf8')
      if (m.code !== 0 || !/no changes/.test(text)) throw new Error(`converged run ${r + 1} did not converge:\n${text.slice(-2000)}`)
      walls.push(m.wallS)
    }
    results.full_stack_one_of_each_converged = {
      median_s: r3(median(walls)),
      min_s: r3(Math.min(...walls)),
      max_s: r3(Math.max(...walls)),
      runs: walls.length,
    }
    say(`converged full stack, one-of-each (16 processes): median ${results.full_stack_one_of_each_converged.median_s} s`)
    results.idle = {
      apache: memory('-C apache2'),
      synapse: memory('-u matrix-synapse'),
      per_unit: inContainer(
        'for u in $(systemctl list-units --no-legend --plain "matrix-synapse*.service" | cut -d" " -f1); do echo "$u $(systemctl show -p MemoryCurrent --value $u)"; done',
      ),
    }
    results.runs.push(await loadRun(`maxClients ${MAX_CLIENTS}`, CLIENTS, HOLD_S))
    if (env.BENCH_CONTRAST === '1') {
      t = performance.now()
      apply(setInventory([[['apache', 'maxClients'], 150]]), 'maxClients 150')
      results.runs.push(await loadRun('maxClients 150 (MaxRequestWorkers 192)', 400, 20))
    }
  } finally {
    results.loadavg_1m_after = loadavg()[0]
    mkdirSync(dirname(OUT), { recursive: true })
    writeFileSync(OUT, JSON.stringify(results, null, 2) + '\n')
    down()
    clearTimeout(deadline)
  }
  process.stdout.write(JSON.stringify(results, null, 2) + '\n')
  say(`wrote ${OUT}`)
}

main().catch((error) => {
  say(`failed: ${error instanceof Error ? error.message : String(error)}`)
  down()
  process.exit(1)
})
