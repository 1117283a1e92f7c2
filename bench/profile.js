// Where matrix-provision's time goes on a converged run: node bench/profile.js [hosts=1] [runs=7]
// Needs the bench image and key (npm run bench once); it compiles and bundles the entry itself.
// Prints the median of each step (from provision-bench --trace), Node's bare start-up, the remote time
// of the two fact probes, and a CPU profile (--cpu-prof) summarised by package.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { exec, resetHosts, startHosts, stopHosts, writeKnownHosts } from './lib/hosts.js'
import { buildBenchEntry } from './lib/build-entry.js'
import { matrixProvision } from './lib/tools.js'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const work = join(root, 'bench/.work')
const n = Number(process.argv[2] ?? 1)
const runs = Number(process.argv[3] ?? 7)
const keyFile = join(work, 'id_ed25519')
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** Steps of one host, from the trace: [label, ms since the previous mark]. */
function steps(stderr) {
  const marks = [...stderr.matchAll(/^\[trace ([\d.]+) ms\] ([^:]+): (.*)$/gm)].map((m) => ({ t: Number(m[1]), host: m[2], msg: m[3] }))
  const host = marks.find((m) => m.host !== '-')?.host
  const mine = marks.filter((m) => m.host === '-' || m.host === host)
  const named = []
  let prev = 0
  let runNo = 0
  // Apply reads the base facts inside the lock's round trip; a dry run (no lock) reads them with the first probe.
  let baseInLock = false
  for (const m of mine) {
    let label = m.msg
    if (m.msg.startsWith('main() entered')) label = 'node start-up + module loading'
    else if (m.msg === 'inventory loaded') label = 'inventory: read, parse, validate'
    else if (m.msg === 'connect start') label = 'runInventory start'
    else if (m.msg === 'connected') label = 'SSH connect (TCP, kex, auth, privilege)'
    else if (/^spawn: (?!end|exited|output)/.test(m.msg)) label = 'runHost start'
    else if (m.msg.startsWith('spawn: output seen (base facts')) ((label = 'base facts (inside the lock round trip)'), (baseInLock = true))
    else if (m.msg.startsWith('spawn: output seen (probe')) label = "resource facts (on the lock's channel)"
    else if (m.msg.startsWith('spawn: output seen')) label = 'lock acquired (1 round trip, with the base facts script)'
    else if (m.msg.startsWith('run ') && m.msg.includes('sh -s')) {
      const probe = ++runNo + (baseInLock ? 1 : 0)
      label = probe === 1 ? 'base facts (1 round trip)' : probe === 2 ? 'resource facts (1 round trip)' : `probe ${probe}`
    } else if (m.msg.startsWith('spawn: end')) label = 'plan (no I/O when converged)'
    else if (m.msg.startsWith('spawn: exited')) label = 'lock released (channel close)'
    else if (m.msg.startsWith('close')) label = 'connection closed'
    else if (m.msg.startsWith('host done')) label = 'report assembled'
    else if (m.msg === 'report written') label = 'report rendered'
    else if (m.msg.startsWith('cpu ')) continue
    named.push([label, m.t - prev])
    prev = m.t
  }
  return named
}

/**
 * SSH round trips of the first host, from the trace: commands and file-write batches (each one exchange),
 * the lock's exchange (its spawn) and the connection. Counts do not depend on the machine's load.
 */
function roundTrips(stderr) {
  const host = stderr.match(/^\[trace [\d.]+ ms\] ([^-:][^:]*): /m)?.[1]
  const mine = [...stderr.matchAll(/^\[trace [\d.]+ ms\] ([^:]+): (.*)$/gm)].filter((m) => m[1] === host).map((m) => m[2])
  const runs = mine.filter((m) => m.startsWith('run ')).length
  const writes = mine.filter((m) => m.startsWith('writeFile')).length
  const locks = mine.filter((m) => /^spawn: (?!end|exited|output)/.test(m)).length
  // Probes sent on the lock's channel after the base facts: an exchange each, but no session of their own.
  const onLock = mine.filter((m) => m.startsWith('spawn: output seen (probe')).length
  return `${runs + writes + locks + onLock} round trips per host after connecting (${locks} lock, ${onLock} probes on its channel, ${runs} commands/probes, ${writes} write batches)`
}

function summariseProfile(file) {
  const prof = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map(prof.nodes.map((nd) => [nd.id, nd]))
  const self = new Map()
  prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)))
  const groups = new Map()
  for (const [id, us] of self) {
    const nd = byId.get(id)
    const url = nd.callFrame.url
    const fn = nd.callFrame.functionName
    let g
    if (!url) g = fn === '(idle)' ? '(idle: waiting on the network/host)' : fn.startsWith('(') ? fn : '(native)'
    else if (url.startsWith('node:')) g = 'node internals (module loader, streams, crypto glue)'
    else if (url.includes('/node_modules/')) g = `npm: ${url.split('/node_modules/').pop().split('/')[0]}`
    else if (url.includes('/bench/.work/bundle/')) g = 'the bundle: matrix-provision, zod, yaml, node-ssh'
    else g = url.replace(/^file:\/\//, '')
    groups.set(g, (groups.get(g) ?? 0) + us)
  }
  const total = [...groups.values()].reduce((a, b) => a + b, 0)
  return [...groups].sort((a, b) => b[1] - a[1]).map(([g, us]) => [g, us / 1000, (100 * us) / total])
}

await buildBenchEntry(root, work)
const hosts = await startHosts(n, { publicKey: `${keyFile}.pub`, tag: 'profile' })
try {
  const dir = join(work, `profile-n${n}`)
  mkdirSync(dir, { recursive: true })
  const ctx = {
    root,
    work,
    keyFile,
    knownHostsFile: join(dir, 'known_hosts'),
    workloadFile: join(root, 'bench/workload.json'),
    hostsFile: join(dir, 'hosts.json'),
  }
  await writeKnownHosts(hosts, ctx.knownHostsFile)
  const inv = matrixProvision.prepare(hosts, ctx, dir)()
  const once = (extra = []) => {
    const t0 = performance.now()
    const r = spawnSync(inv.cmd, [...extra, ...inv.args, '--trace'], { env: inv.env, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(r.stderr + r.stdout)
    return { wall: performance.now() - t0, stderr: r.stderr }
  }
  await resetHosts(hosts)
  const fresh = once()
  console.log(`fresh run: ${fresh.wall.toFixed(0)} ms, ${roundTrips(fresh.stderr)}; its steps (ms):`)
  const freshSteps = steps(fresh.stderr)
  if (process.env.PROFILE_RAW) for (const [label, ms] of freshSteps) console.log(`  raw ${ms.toFixed(0).padStart(6)}  ${label}`)
  const freshAgg = new Map()
  for (const [label, ms] of freshSteps) {
    const k = /^probe \d+/.test(label)
      ? 'facts re-read after a change (1 round trip each)'
      : label.startsWith('writeFile')
        ? 'file writes (1 round trip per batch)'
        : label.startsWith('run ')
          ? `command: ${label.replace(/^run [\d.]+ ms: /, '').slice(0, 50)}`
          : label
    const cur = freshAgg.get(k) ?? { count: 0, ms: 0 }
    freshAgg.set(k, { count: cur.count + 1, ms: cur.ms + ms })
  }
  for (const [k, v] of [...freshAgg].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12))
    console.log(`  ${v.ms.toFixed(0).padStart(6)}  x${String(v.count).padEnd(3)} ${k}`)

  const walls = []
  const stepSamples = new Map()
  for (let i = 0; i < runs; i++) {
    const r = once()
    if (i === 0) console.log(`\nconverged: ${roundTrips(r.stderr)}`)
    walls.push(r.wall)
    for (const [label, ms] of steps(r.stderr)) stepSamples.set(label, [...(stepSamples.get(label) ?? []), ms])
  }
  const cpus = []
  for (let i = 0; i < runs; i++) cpus.push(Number(once().stderr.match(/\] -: cpu (\d+) ms/)[1]))
  const bare = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    execFileSync(process.execPath, ['-e', '0'])
    bare.push(performance.now() - t0)
  }
  console.log(
    `\nconverged run, ${n} host(s): median ${median(walls).toFixed(0)} ms wall over ${runs} runs (min ${Math.min(...walls).toFixed(0)}); bare \`node -e 0\`: ${median(bare).toFixed(0)} ms`,
  )
  console.log(`controller CPU (user + system) of a converged run: median ${median(cpus)} ms over ${runs} runs (min ${Math.min(...cpus)})`)
  console.log('median per step (ms), first host:')
  for (const [label, xs] of stepSamples) console.log(`  ${median(xs).toFixed(1).padStart(7)}  ${label}`)

  // The remote side of the two probes, timed on the host itself (no SSH): process spawning there.
  const probes = join(work, 'build/bench/mp/probe-scripts.js')
  writeFileSync(
    probes,
    `import { probeScript } from '../../src/facts/probe.js'\nimport { BASE_FACTS } from '../../src/engine/host-run.js'\nimport { benchTask, loadWorkload } from './bench-task.js'\n` +
      `const rs = await benchTask(loadWorkload(process.argv[2])).resources({})\nconst seen = new Set(BASE_FACTS.map((f) => f.id))\n` +
      `const facts = [...new Map(rs.flatMap((r) => r.facts()).filter((f) => !seen.has(f.id)).map((f) => [f.id, f])).values()]\n` +
      `process.stdout.write(JSON.stringify({ base: probeScript(BASE_FACTS), resources: probeScript(facts), count: facts.length }))\n`,
  )
  const scripts = JSON.parse(execFileSync(process.execPath, [probes, ctx.workloadFile], { encoding: 'utf8' }))
  const remote = async (script) => {
    const xs = []
    for (let i = 0; i < 5; i++) {
      const out = await exec(
        hosts[0].id,
        `t0=$(date +%s%N); sh -s >/dev/null <<'MPEOF'\n${script}\nMPEOF\necho $(( ($(date +%s%N) - t0) / 1000 ))`,
      )
      xs.push(Number(out.trim()) / 1000)
    }
    return median(xs)
  }
  console.log(
    `\non the host itself: base-facts probe ${(await remote(scripts.base)).toFixed(1)} ms, resource-facts probe (${scripts.count} facts) ${(await remote(scripts.resources)).toFixed(1)} ms`,
  )

  const profDir = mkdtempSync(join(tmpdir(), 'mp-cpuprof-'))
  once(['--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval=200'])
  const file = join(profDir, readdirSync(profDir)[0])
  console.log(`\nCPU profile of one converged run (${file}), self time by owner:`)
  for (const [g, ms, pct] of summariseProfile(file).slice(0, 14))
    console.log(`  ${ms.toFixed(1).padStart(7)} ms ${pct.toFixed(1).padStart(5)}%  ${g}`)
} finally {
  await stopHosts(hosts)
}
