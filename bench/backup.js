// npm run bench:backup: provision backup and restore of a homeserver whose media store holds 1 GiB,
// timed through the real CLI (bin/provision.js), with the controller's peak RSS. See bench/README.md.
// It uses a sandbox homeserver of its own (settings below), fills its media store with random files,
// backs it up into bench/.work/backups, and restores that backup onto the same host (--force).
//   BENCH_MEDIA_MIB=1024        media to back up
//   SANDBOX_NAME=mp-bench-backup SANDBOX_DIR=bench/.work/sandbox SANDBOX_SSH_PORT=2291 SANDBOX_HTTPS_PORT=8491
//   BENCH_KEEP=1                leave the sandbox running afterwards
//   BENCH_OUT=bench/results/backup-latest.json
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const work = join(root, 'bench/.work')
const env = {
  ...process.env,
  SANDBOX_NAME: process.env.SANDBOX_NAME ?? 'mp-bench-backup',
  SANDBOX_DIR: process.env.SANDBOX_DIR ?? join(work, 'sandbox'),
  SANDBOX_SSH_PORT: process.env.SANDBOX_SSH_PORT ?? '2291',
  SANDBOX_HTTPS_PORT: process.env.SANDBOX_HTTPS_PORT ?? '8491',
}
const MEDIA_MIB = Number(process.env.BENCH_MEDIA_MIB ?? 1024)
const OUT = process.env.BENCH_OUT ?? join(root, 'bench/results/backup-latest.json')
const inventory = join(env.SANDBOX_DIR, 'inventory.yaml')
const backups = join(work, 'backups')
const say = (msg) => process.stderr.write(`bench: ${msg}\n`)

/** The CLI as users run it, with a preload that reports the process's peak RSS (getrusage maxrss) at exit. */
function provision(args) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(process.execPath, ['--import', join(root, 'bench/lib/max-rss.js'), join(root, 'bin/provision.js'), ...args], {
      env: { ...env, CI: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => (stdout += c))
    child.stderr.on('data', (c) => (stderr += c))
    child.on('error', reject)
    child.on('close', (code) => {
      const ms = performance.now() - t0
      const rss = /MP-MAX-RSS-KIB (\d+)/.exec(stderr)
      if (code !== 0) return reject(new Error(`provision ${args.join(' ')} exited ${code}\n${stdout}\n${stderr}`))
      resolve({ seconds: Math.round(ms) / 1000, peakRssMiB: rss ? Math.round(Number(rss[1]) / 102.4) / 10 : null, stdout, stderr })
    })
  })
}

const inContainer = (script) =>
  execFileSync('docker', ['exec', env.SANDBOX_NAME, 'sh', '-c', script], { encoding: 'utf8', maxBuffer: 1 << 26 })

const loadAtStart = loadavg()[0]
say(`sandbox ${env.SANDBOX_NAME} (provision sandbox: reused when up)`)
execFileSync(process.execPath, [join(root, 'bin/provision.js'), 'sandbox'], { env, stdio: ['ignore', 'ignore', 'inherit'] })
// 4 MiB random files, as uploads land in local_content (two-level directories), owned by Synapse.
say(`writing ${MEDIA_MIB} MiB of random media on the host`)
inContainer(
  `set -e; d=/var/lib/matrix-synapse/media/local_content/bench; rm -rf "$d"; mkdir -p "$d"; ` +
    `i=0; while [ $i -lt ${Math.ceil(MEDIA_MIB / 4)} ]; do mkdir -p "$d/$((i % 16))"; head -c 4194304 /dev/urandom > "$d/$((i % 16))/f$i"; i=$((i + 1)); done; ` +
    `chown -R matrix-synapse:matrix-synapse /var/lib/matrix-synapse/media`,
)
const media = Number(inContainer(`du -sb /var/lib/matrix-synapse/media/local_content | cut -f1`).trim())
rmSync(backups, { recursive: true, force: true })
mkdirSync(work, { recursive: true })

say('provision backup')
const backup = await provision(['backup', '--inventory', inventory, '--limit', 'sandbox', '--to', backups, '--json'])
const report = JSON.parse(backup.stdout)
const dir = report.hosts[0].dir
const files = report.hosts[0].manifest.files.map((f) => ({ name: f.name, bytes: f.bytes }))
say(`backup: ${backup.seconds} s, peak RSS ${backup.peakRssMiB} MiB`)

say('provision restore --force (onto the same host)')
const restore = await provision(['restore', '--inventory', inventory, '--limit', 'sandbox', '--from', dir, '--force', '--json'])
say(`restore: ${restore.seconds} s, peak RSS ${restore.peakRssMiB} MiB`)
const restored = Number(inContainer(`du -sb /var/lib/matrix-synapse/media/local_content | cut -f1`).trim())
if (restored !== media) throw new Error(`media after restore: ${restored} bytes, before: ${media}`)

const result = {
  date: new Date().toISOString(),
  machine: {
    cpus: cpus().length,
    model: cpus()[0]?.model,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    loadavg1AtStart: loadAtStart,
    loadavg1AtEnd: loadavg()[0],
  },
  mediaBytes: media,
  backup: { seconds: backup.seconds, peakRssMiB: backup.peakRssMiB, files },
  restore: {
    seconds: restore.seconds,
    peakRssMiB: restore.peakRssMiB,
    steps: Object.fromEntries(JSON.parse(restore.stdout).steps.map((s) => [s.action, s.durationMs / 1000])),
  },
  note: 'host: the sandbox container on this machine (SSH over loopback); restore replaces the same host (--force), which includes applying the inventory and its after-checks',
}
writeFileSync(OUT, JSON.stringify(result, null, 2) + '\n')
say(`wrote ${OUT}`)
// The restore kept the replaced database and media (--force): drop them, they are the bench's own.
inContainer(
  `rm -rf /var/lib/matrix-synapse/media-replaced-* /var/lib/matrix-synapse/media/local_content/bench; cd / && for d in $(runuser -u postgres -- psql -XAt -c "select datname from pg_database where datname like 'synapse_replaced_%'"); do runuser -u postgres -- dropdb "$d"; done`,
)
rmSync(backups, { recursive: true, force: true })
if (!process.env.BENCH_KEEP)
  execFileSync(process.execPath, [join(root, 'bin/provision.js'), 'sandbox', '--down'], { env, stdio: 'inherit' })
