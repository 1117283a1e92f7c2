// npm run bench: matrix-provision against Ansible and pyinfra on N real systemd hosts, and the floor.
// See bench/README.md for the method. Settings (environment):
//   BENCH_HOSTS=1,10,25     host counts
//   BENCH_RUNS=3            runs per cell (fresh and converged each), BENCH_RUNS_LARGE=2 for N >= 25
//   BENCH_FLOOR_RUNS=5      runs of the floor per host count
//   BENCH_TOOLS=matrix-provision,ansible,pyinfra
//   BENCH_SKIP_SETUP=1      do not run bench/tools/setup-tools.sh (tools already installed)
//   BENCH_OUT=bench/results/latest.json
//   BENCH_MERGE=1           keep the existing figures of host counts not in BENCH_HOSTS
import { execFile, execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, hostname, loadavg, release, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { checkHosts, removeLeftovers, resetHosts, startHosts, stopHosts, writeKnownHosts, IMAGE } from './lib/hosts.js'
import { measure } from './lib/measure.js'
import { TOOLS, floor } from './lib/tools.js'
import { buildBenchEntry } from './lib/build-entry.js'

const run = promisify(execFile)
const root = dirname(dirname(fileURLToPath(import.meta.url)))
const work = join(root, 'bench/.work')
const env = process.env
const SIZES = (env.BENCH_HOSTS ?? '1,10,25').split(',').filter(Boolean).map(Number)
const RUNS = Number(env.BENCH_RUNS ?? 3)
const RUNS_LARGE = Number(env.BENCH_RUNS_LARGE ?? 2)
const FLOOR_RUNS = Number(env.BENCH_FLOOR_RUNS ?? 5)
const TOOL_NAMES = (env.BENCH_TOOLS ?? 'matrix-provision,ansible,pyinfra').split(',')
const OUT = env.BENCH_OUT ?? join(root, 'bench/results/latest.json')
const RUN_TIMEOUT_MS = 10 * 60_000

const say = (msg) => process.stderr.write(`bench: ${msg}\n`)
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const r3 = (x) => Math.round(x * 1000) / 1000

async function setup() {
  if (env.BENCH_SKIP_SETUP !== '1') execFileSync('bash', [join(root, 'bench/tools/setup-tools.sh')], { stdio: 'inherit' })
  // The test image first (as test/support/global-setup.ts builds it), then the bench image on top.
  const base = 'matrix-provision/debian-systemd:bookworm'
  if (spawnSync('docker', ['image', 'inspect', base], { stdio: 'ignore' }).status !== 0) {
    say(`building the base image ${base} (debootstrap from Debian's archive, about 2 minutes)`)
    execFileSync('bash', [join(root, 'docker/build-base-images.sh'), 'bookworm'], { stdio: 'inherit' })
  }
  execFileSync('docker', ['build', '-q', '-t', 'matrix-provision/target:bookworm', '--build-arg', `BASE=${base}`, join(root, 'docker')], {
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  say(`building ${IMAGE}`)
  execFileSync('docker', ['build', '-q', '-t', IMAGE, '-f', join(root, 'bench/image/Dockerfile'), join(work, 'image-debs')], {
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  say('compiling and bundling the matrix-provision bench entry (bench/tsconfig.json, scripts/bundle.js)')
  await buildBenchEntry(root, work, say)
  // Each systemd container holds ~7 inotify instances; Linux's default of 128 per user stops the 19th or so
  // (systemd exits 255 at boot). Raise the limit for this machine (it only ever goes up).
  const want = 64 + 10 * Math.max(...SIZES)
  const have = Number(readFileSync('/proc/sys/fs/inotify/max_user_instances', 'utf8'))
  if (have < want) {
    say(`raising fs.inotify.max_user_instances from ${have} to ${want} for ${Math.max(...SIZES)} systemd containers`)
    try {
      writeFileSync('/proc/sys/fs/inotify/max_user_instances', String(want))
    } catch (e) {
      throw new Error(
        `fs.inotify.max_user_instances is ${have}, too low for ${Math.max(...SIZES)} systemd containers: run sysctl -w fs.inotify.max_user_instances=${want} as root (${e.message})`,
        { cause: e },
      )
    }
  }
  const keyFile = join(work, 'id_ed25519')
  if (!existsSync(keyFile)) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'matrix-provision-bench', '-f', keyFile])
  return keyFile
}

async function machine() {
  const v = async (cmd, args) => (await run(cmd, args).catch((e) => ({ stdout: `unavailable: ${e.message.split('\n')[0]}` }))).stdout.trim()
  const git =
    (await v('git', ['-C', root, 'rev-parse', 'HEAD'])) +
    ((await v('git', ['-C', root, 'status', '--porcelain', '--', 'src', 'tasks'])) ? ' (src/tasks modified)' : '')
  return {
    hostname: hostname(),
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    docker: await v('docker', ['version', '--format', '{{.Server.Version}}']),
    node: process.version,
    matrix_provision: `${JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version} at ${git}`,
    ssh2: JSON.parse(readFileSync(join(root, 'node_modules/ssh2/package.json'), 'utf8')).version,
    ansible: `${await v('dpkg-query', ['-W', '-f', '${Version}', 'ansible'])} (ansible-core ${await v('dpkg-query', ['-W', '-f', '${Version}', 'ansible-core'])})`,
    pyinfra: (await v(join(work, 'pyinfra-venv/bin/pyinfra'), ['--version'])).replace(/^pyinfra:\s*v?/, ''),
    python_pyinfra: await v(join(work, 'pyinfra-venv/bin/python'), ['--version']),
    python_ansible: await v('/usr/bin/python3', ['--version']),
    openssh: (await run('ssh', ['-V']).catch((e) => e)).stderr?.trim(),
    target_image: IMAGE,
    date: new Date().toISOString(),
  }
}

async function timed(label, inv, logDir, n, expectConverged, convergedCheck) {
  const log = join(logDir, `${label}.log`)
  const m = await measure(inv.cmd, inv.args, { env: inv.env, log, detachedMatch: inv.detachedMatch, timeoutMs: RUN_TIMEOUT_MS })
  await inv.after?.()
  const output = readFileSync(log, 'utf8')
  if (m.code !== 0) throw new Error(`${label} exited ${m.code}; see ${log}:\n${output.split('\n').slice(-15).join('\n')}`)
  if (expectConverged && !convergedCheck(output, n))
    throw new Error(`${label}: a second run should change nothing, but its output says otherwise; see ${log}`)
  say(`  ${label}: ${m.wallS.toFixed(3)} s, peak ${m.peakRssMiB} MiB RSS / ${m.peakPssMiB} MiB PSS`)
  return m
}

async function benchSize(n, keyFile, results, warmup) {
  const runs = n >= 25 ? RUNS_LARGE : RUNS
  const tag = `b${Date.now().toString(36)}`
  const dir = join(work, `n${n}`)
  const logDir = join(dir, 'logs')
  mkdirSync(logDir, { recursive: true })
  say(`N=${n}: starting ${n} host(s)`)
  const t0 = Date.now()
  const hosts = await startHosts(n, { publicKey: `${keyFile}.pub`, tag })
  say(`N=${n}: ${n} host(s) up in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  try {
    const ctx = {
      root,
      work,
      keyFile,
      knownHostsFile: join(dir, 'known_hosts'),
      workloadFile: join(root, 'bench/workload.json'),
      hostsFile: join(dir, 'hosts.json'),
    }
    await writeKnownHosts(hosts, ctx.knownHostsFile)
    writeFileSync(
      ctx.hostsFile,
      JSON.stringify({ keyFile, knownHostsFile: ctx.knownHostsFile, hosts: hosts.map(({ name, port }) => ({ name, port })) }, null, 2),
    )
    const workload = JSON.parse(readFileSync(ctx.workloadFile, 'utf8'))
    const tools = TOOL_NAMES.map((name) => ({ tool: TOOLS[name], invocation: TOOLS[name].prepare(hosts, ctx, dir) }))
    const samples = new Map()
    const add = (tool, phase, m) => {
      const key = `${tool}|${phase}`
      samples.set(key, [...(samples.get(key) ?? []), m])
    }
    // Warm-up (not counted), before the first host count only: page cache, Python bytecode caches.
    if (warmup && env.BENCH_WARMUP !== '0') {
      for (const { tool, invocation } of tools) {
        await resetHosts(hosts)
        await timed(`warmup-${tool.name}`, invocation(), logDir, n, false, tool.converged)
      }
    }
    for (let r = 0; r < runs; r++) {
      // Rotate the order so no tool always runs first (or right after another's heavy run).
      const order = tools.map((_, i) => tools[(i + r) % tools.length])
      for (const { tool, invocation } of order) {
        await resetHosts(hosts)
        add(tool.name, 'fresh', await timed(`${tool.name}-fresh-${r + 1}`, invocation(), logDir, n, false, tool.converged))
        await checkHosts(hosts, workload)
        add(tool.name, 'converged', await timed(`${tool.name}-converged-${r + 1}`, invocation(), logDir, n, true, tool.converged))
      }
    }
    const floorInv = floor.prepare(hosts, ctx)
    for (let r = 0; r < FLOOR_RUNS; r++)
      add('floor', 'converged', await timed(`floor-${r + 1}`, floorInv(), logDir, n, false, floor.converged))
    for (const [key, ms] of samples) {
      const [tool, phase] = key.split('|')
      const walls = ms.map((m) => m.wallS)
      results.push({
        tool,
        hosts: n,
        phase,
        median_s: r3(median(walls)),
        min_s: r3(Math.min(...walls)),
        max_s: r3(Math.max(...walls)),
        peak_rss_mib: Math.max(...ms.map((m) => m.peakRssMiB)),
        peak_pss_mib: Math.max(...ms.map((m) => m.peakPssMiB)),
        runs: walls.length,
      })
    }
  } finally {
    await stopHosts(hosts)
  }
}

function table(results) {
  const get = (tool, n, phase) => results.find((x) => x.tool === tool && x.hosts === n && x.phase === phase)
  const cell = (x) => (x ? `${x.median_s.toFixed(2)} (${x.min_s.toFixed(2)}-${x.max_s.toFixed(2)})` : '-')
  const ratio = (a, b) => (a && b ? `${(a.median_s / b.median_s).toFixed(1)}x` : '-')
  const mem = (x) => (x ? `${x.peak_rss_mib}/${x.peak_pss_mib}` : '-')
  const head = [
    'hosts',
    'phase',
    'matrix-provision s',
    'ansible s',
    'pyinfra s',
    'floor s',
    'ansible/mp',
    'pyinfra/mp',
    'mp/floor',
    'mp MiB',
    'ansible MiB',
    'pyinfra MiB',
  ]
  const rows = []
  for (const n of [...new Set(results.map((x) => x.hosts))]) {
    for (const phase of ['fresh', 'converged']) {
      const mp = get('matrix-provision', n, phase)
      const an = get('ansible', n, phase)
      const py = get('pyinfra', n, phase)
      const fl = get('floor', n, 'converged')
      rows.push([
        String(n),
        phase,
        cell(mp),
        cell(an),
        cell(py),
        cell(fl),
        ratio(an, mp),
        ratio(py, mp),
        ratio(mp, fl),
        mem(mp),
        mem(an),
        mem(py),
      ])
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cols) => '| ' + cols.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |'
  const out = [line(head), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.map(line)]
  const mpMem = results.filter((x) => x.tool === 'matrix-provision' && x.phase === 'converged').sort((a, b) => a.hosts - b.hosts)
  if (mpMem.length > 1) {
    const a = mpMem[0]
    const b = mpMem[mpMem.length - 1]
    out.push(
      '',
      `matrix-provision memory per extra host (converged, ${a.hosts} -> ${b.hosts} hosts): ${((b.peak_rss_mib - a.peak_rss_mib) / (b.hosts - a.hosts)).toFixed(2)} MiB RSS`,
    )
  }
  out.push('', 'Times: median (min-max) wall seconds, spawn to exit. Memory: peak RSS / peak PSS of the process tree, MiB.')
  return out.join('\n')
}

/**
 * Issue 6, item 6: the full Matrix stack on the sandbox host (Postgres, Redis, Synapse, both workers,
 * Apache, Element, metrics), provisioned once by `provision sandbox`, then timed converged and as a
 * --dry-run through the real CLI (dist/, spawn to exit). Its own container and directory.
 */
async function benchFullStack(results) {
  const dir = join(root, 'bench/.work/stack')
  const env2 = { ...process.env, SANDBOX_NAME: 'mp-bench-stack', SANDBOX_DIR: dir, SANDBOX_SSH_PORT: '22322', SANDBOX_HTTPS_PORT: '28443' }
  const cli = join(root, 'bin/provision.js')
  execFileSync('npm', ['run', '-s', 'build'], { cwd: root, stdio: 'inherit' })
  say('full stack: provisioning the sandbox host once (about 2 minutes)')
  const up = spawnSync('node', [cli, 'sandbox'], { cwd: root, env: env2, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' })
  if (up.status !== 0) throw new Error(`provision sandbox failed:\n${up.stdout}\n${up.stderr}`)
  mkdirSync(join(dir, 'logs'), { recursive: true })
  const inventory = join(dir, 'inventory.yaml')
  try {
    for (const [phase, extra] of [
      ['full-stack-converged', []],
      ['full-stack-dry-run', ['--dry-run']],
    ]) {
      const ms = []
      for (let r = 0; r < RUNS; r++) {
        const m = await measure('node', [cli, '--inventory', inventory, ...extra], {
          cwd: root,
          env: env2,
          log: join(dir, 'logs', `${phase}-${r + 1}.log`),
        })
        const text = readFileSync(join(dir, 'logs', `${phase}-${r + 1}.log`), 'utf8')
        if (m.code !== 0 || !/no changes/.test(text)) throw new Error(`${phase} run ${r + 1} did not converge:\n${text.slice(-2000)}`)
        ms.push(m)
      }
      const walls = ms.map((m) => m.wallS)
      results.push({
        tool: 'matrix-provision',
        hosts: 1,
        phase,
        median_s: r3(median(walls)),
        min_s: r3(Math.min(...walls)),
        max_s: r3(Math.max(...walls)),
        peak_rss_mib: Math.max(...ms.map((m) => m.peakRssMiB)),
        peak_pss_mib: Math.max(...ms.map((m) => m.peakPssMiB)),
        runs: walls.length,
      })
      say(`${phase}: median ${r3(median(walls))} s over ${walls.length} runs`)
    }
  } finally {
    spawnSync('node', [cli, 'sandbox', '--down'], { cwd: root, env: env2, stdio: 'ignore' })
  }
}

async function main() {
  const keyFile = await setup()
  await removeLeftovers()
  const results = []
  const onSignal = () => {
    removeLeftovers().finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const started = Date.now()
  const loadBefore = loadavg()
  let loadByHosts = {}
  // BENCH_MERGE=1: keep the figures of host counts not run this time from the existing results file.
  let kept = []
  if (env.BENCH_MERGE === '1' && existsSync(OUT))
    kept = JSON.parse(readFileSync(OUT, 'utf8')).results.filter((x) =>
      x.phase.startsWith('full-stack') ? env.BENCH_STACK === '0' : !SIZES.includes(x.hosts),
    )
  const info = await machine()
  const save = () => {
    const record = {
      machine: { ...info, loadavg_1m_before: loadBefore[0], loadavg_1m_after: loadavg()[0] },
      config: {
        hosts: SIZES,
        runs: RUNS,
        runs_large: RUNS_LARGE,
        floor_runs: FLOOR_RUNS,
        tools: TOOL_NAMES,
        workload: 'bench/workload.json',
        duration_s: Math.round((Date.now() - started) / 1000),
        merged_from_earlier_run: [...new Set(kept.map((x) => x.hosts))],
        loadavg_1m_by_hosts: loadByHosts,
      },
      results: [...kept, ...results].sort((a, b) => a.hosts - b.hosts),
    }
    mkdirSync(dirname(OUT), { recursive: true })
    writeFileSync(OUT, JSON.stringify(record, null, 2) + '\n')
    return record
  }
  for (const [i, n] of SIZES.entries()) {
    const before = loadavg()[0]
    await benchSize(n, keyFile, results, i === 0)
    loadByHosts[n] = { before: before, after: loadavg()[0] }
    save() // after each host count: an interrupted bench keeps what it measured
  }
  if (env.BENCH_STACK !== '0') await benchFullStack(results)
  const record = save()
  process.stdout.write(table(record.results.filter((x) => !x.phase.startsWith('full-stack'))) + '\n')
  for (const x of record.results.filter((r) => r.phase.startsWith('full-stack')))
    process.stdout.write(
      `${x.phase}: ${x.median_s.toFixed(2)} s (${x.min_s.toFixed(2)}-${x.max_s.toFixed(2)}), peak RSS ${x.peak_rss_mib} MiB\n`,
    )
  say(`wrote ${OUT}`)
}

main().catch(async (error) => {
  say(`failed: ${error instanceof Error ? error.message : String(error)}`)
  await removeLeftovers()
  process.exitCode = 1
})
