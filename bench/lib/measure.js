// Run one command as its own process and measure it: wall time from spawn to exit, and the peak
// memory of the whole process tree it starts.
//
// Memory, two ways, both reported:
// - GNU time's %M (via /usr/bin/time -f %M): the exact peak RSS of the largest single process of the tree
//   (wait4's rusage keeps the maximum, not the sum). Exact for single-process tools (matrix-provision,
//   pyinfra, the floor), an under-count for Ansible, which forks one worker per host.
// - A sampler (every 40 ms for 2 s, then every 200 ms): walks the tree through /proc/<pid>/task/*/children and sums
//   Rss and Pss from /proc/<pid>/smaps_rollup. Extra processes that left the tree (Ansible's detached ssh
//   ControlMaster) are added by a matcher on their command line. Pss splits pages shared by forks
//   among them, so Σ Pss is the tree's real footprint; Σ Rss counts every shared page once per process.
// peak_rss_mib = max(time %M, sampled Σ Rss); peak_pss_mib = sampled Σ Pss (at least time's %M for
// a single process is not known as Pss, so for those the sampled value is reported).
import { spawn } from 'node:child_process'
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'

// Every 40 ms for the first 2 s (short runs), then every 200 ms (long runs: the sampler's own CPU use
// stays small on 2 cores, where it would otherwise slow down the tool it measures, most of all Ansible's ~40 processes).
const SAMPLE_MS = Number(process.env.BENCH_SAMPLE_MS ?? 40)
const SAMPLE_SLOW_MS = Number(process.env.BENCH_SAMPLE_SLOW_MS ?? 200)

function children(pid) {
  const out = []
  let tasks
  try {
    tasks = readdirSync(`/proc/${pid}/task`)
  } catch {
    return out
  }
  for (const tid of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ')) if (c.trim()) out.push(Number(c))
    } catch {
      // gone
    }
  }
  return out
}

function memOf(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
    const rss = /^Rss:\s+(\d+) kB/m.exec(text)
    const pss = /^Pss:\s+(\d+) kB/m.exec(text)
    return { rss: rss ? Number(rss[1]) : 0, pss: pss ? Number(pss[1]) : 0 }
  } catch {
    return { rss: 0, pss: 0 }
  }
}

function findByCmdline(needle) {
  const found = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(needle)) found.push(Number(name))
    } catch {
      // gone
    }
  }
  return found
}

/**
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ env?: NodeJS.ProcessEnv, cwd?: string, log: string, detachedMatch?: string, timeoutMs?: number }} opts
 * @returns {Promise<{ code: number|null, wallS: number, peakRssMiB: number, peakPssMiB: number, maxSingleRssMiB: number, samples: number }>}
 */
export function measure(cmd, args, opts) {
  const timeFile = `${opts.log}.time`
  const out = openSync(opts.log, 'w')
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn('/usr/bin/time', ['-f', '%M', '-o', timeFile, cmd, ...args], {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['ignore', out, out],
    })
    let peakRss = 0
    let peakPss = 0
    let samples = 0
    let tick = 0
    const detached = new Set()
    const sample = () => {
      tick++
      if (opts.detachedMatch && (tick < 50 ? tick % 5 === 1 : tick % 5 === 0))
        for (const pid of findByCmdline(opts.detachedMatch)) detached.add(pid)
      // The tree below GNU time (time itself is not the tool: left out).
      const pids = new Set(detached)
      const stack = children(child.pid)
      while (stack.length) {
        const pid = stack.pop()
        if (pids.has(pid)) continue
        pids.add(pid)
        stack.push(...children(pid))
      }
      let rss = 0
      let pss = 0
      for (const pid of pids) {
        const m = memOf(pid)
        rss += m.rss
        pss += m.pss
      }
      samples++
      if (rss > peakRss) peakRss = rss
      if (pss > peakPss) peakPss = pss
    }
    let timer
    const loop = () => {
      sample()
      timer = setTimeout(loop, performance.now() - t0 < 2000 ? SAMPLE_MS : SAMPLE_SLOW_MS)
    }
    timer = setTimeout(loop, SAMPLE_MS)
    const killer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('exit', (code) => {
      const wallS = (performance.now() - t0) / 1000
      clearTimeout(timer)
      clearTimeout(killer)
      closeSync(out)
      let maxSingle = 0
      try {
        const lines = readFileSync(timeFile, 'utf8').trim().split('\n')
        maxSingle = Number(lines[lines.length - 1]) || 0
      } catch {
        // time wrote nothing (killed)
      }
      const mib = (kb) => Math.round((kb / 1024) * 10) / 10
      resolve({
        code,
        wallS,
        peakRssMiB: mib(Math.max(peakRss, maxSingle)),
        peakPssMiB: mib(peakPss),
        maxSingleRssMiB: mib(maxSingle),
        samples,
      })
    })
  })
}
