// npm run bench:move: `provision move` of a homeserver whose media store holds 1 GiB, through the real
// CLI (bin/provision.js): downtime, and the rate of the media copy against raw `ssh cat` between the same
// two hosts through this machine. See bench/README.md ("Moving to a new machine").
// OLD is a sandbox homeserver of its own (provisioned by `provision sandbox`, 1 GiB of random media
// written into its store); NEW is a fresh target container of the same image. Both are reached over SSH
// on loopback; every byte from OLD to NEW passes this machine (the move relays, raw `ssh | ssh` too).
//   BENCH_MEDIA_MIB=1024        media on OLD
//   BENCH_DB_MIB=0              grow OLD's database to this size first (rows of event_json and state_groups_state,
//                               Synapse's two largest tables on a real server, with their indexes), so the downtime
//                               shows the database's share for a server of that size
//   SANDBOX_NAME=mp-bench-move SANDBOX_DIR=bench/.work/move-sandbox SANDBOX_SSH_PORT=2292 SANDBOX_HTTPS_PORT=8492
//   BENCH_NEW_IMAGE=matrix-provision/target:bookworm
//   BENCH_KEEP=1                leave both hosts running afterwards
//   BENCH_OUT=bench/results/move-latest.json
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseDocument } from 'yaml'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const work = join(root, 'bench/.work')
const env = {
  ...process.env,
  SANDBOX_NAME: process.env.SANDBOX_NAME ?? 'mp-bench-move',
  SANDBOX_DIR: process.env.SANDBOX_DIR ?? join(work, 'move-sandbox'),
  SANDBOX_SSH_PORT: process.env.SANDBOX_SSH_PORT ?? '2292',
  SANDBOX_HTTPS_PORT: process.env.SANDBOX_HTTPS_PORT ?? '8492',
}
process.env.BENCH_IMAGE = process.env.BENCH_NEW_IMAGE ?? 'matrix-provision/target:bookworm'
const { startHosts, stopHosts, writeKnownHosts, exec } = await import('./lib/hosts.js')
const MEDIA_MIB = Number(process.env.BENCH_MEDIA_MIB ?? 1024)
const DB_MIB = Number(process.env.BENCH_DB_MIB ?? 0)
const OUT = process.env.BENCH_OUT ?? join(root, 'bench/results/move-latest.json')
const dir = env.SANDBOX_DIR
const say = (msg) => process.stderr.write(`bench: ${msg}\n`)
const load = () => Math.round(loadavg()[0] * 100) / 100
const MEDIA = '/var/lib/matrix-synapse/media'

/** The CLI as users run it, with a preload that reports the process's peak RSS (getrusage maxrss) at exit. */
function provision(args, { allowFailure = false } = {}) {
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
      if (code !== 0 && !allowFailure) return reject(new Error(`provision ${args.join(' ')} exited ${code}\n${stdout}\n${stderr}`))
      resolve({ code, seconds: Math.round(ms) / 1000, peakRssMiB: rss ? Math.round(Number(rss[1]) / 102.4) / 10 : null, stdout, stderr })
    })
  })
}

const sshArgs = (port) => [
  '-p',
  String(port),
  '-i',
  join(dir, 'id_ed25519'),
  '-o',
  `UserKnownHostsFile=${join(dir, 'move-known_hosts')}`,
  '-o',
  'StrictHostKeyChecking=yes',
  '-o',
  'BatchMode=yes',
  'root@127.0.0.1',
]

/** `ssh OLD send | ssh NEW receive` with OpenSSH, through this machine as the move's relay is: seconds. */
function rawPipe(oldPort, newPort, send, receive) {
  const t0 = performance.now()
  execFileSync('sh', ['-c', `ssh ${sshArgs(oldPort).join(' ')} '${send}' | ssh ${sshArgs(newPort).join(' ')} '${receive}'`], {
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  return Math.round(performance.now() - t0) / 1000
}

const loadAtStart = load()
say(`OLD: sandbox ${env.SANDBOX_NAME} (provision sandbox: reused when up)`)
execFileSync(process.execPath, [join(root, 'bin/provision.js'), 'sandbox'], { env, stdio: ['ignore', 'ignore', 'inherit'] })
const oldId = env.SANDBOX_NAME
say(`writing ${MEDIA_MIB} MiB of random media on OLD, and a file of the same size for raw ssh cat`)
await exec(
  oldId,
  `set -e; d=${MEDIA}/local_content/bench; rm -rf "$d"; mkdir -p "$d"; ` +
    `i=0; while [ $i -lt ${Math.ceil(MEDIA_MIB / 4)} ]; do mkdir -p "$d/$((i % 16))"; head -c 4194304 /dev/urandom > "$d/$((i % 16))/f$i"; i=$((i + 1)); done; ` +
    `chown -R matrix-synapse:matrix-synapse ${MEDIA}; head -c ${MEDIA_MIB * 1048576} /dev/urandom > /var/tmp/bench-blob`,
)
const mediaBytes = Number((await exec(oldId, `du -sb ${MEDIA} | cut -f1`)).trim())
if (DB_MIB > 0) {
  // Batches of ~100 MB until pg_database_size reaches the target: events of ~1 KB of JSON (a message with
  // its signatures and unsigned data is about that) and state rows. Synapse reads neither at start.
  say(`growing OLD's database to ${DB_MIB} MiB`)
  const psql = (sql) => exec(oldId, `runuser -u postgres -- psql -XAtq -d synapse -c "${sql}"`)
  const size = async () => Number((await psql(`SELECT pg_database_size('synapse')`)).trim())
  for (let batch = 0; (await size()) < DB_MIB * 1048576; batch++) {
    const from = batch * 50000
    await psql(
      `INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version) SELECT '\\$bench' || g || ':bench', '!bench' || (g % 500) || ':bench', '{}', json_build_object('type', 'm.room.message', 'content', json_build_object('body', md5(g::text) || repeat(' lorem ipsum', 40), 'msgtype', 'm.text'), 'sender', '@u' || (g % 2000) || ':bench', 'origin_server_ts', g, 'signatures', json_build_object('bench', json_build_object('ed25519:a', md5(g::text || 's') || md5(g::text || 't'))))::text, 3 FROM generate_series(${from}, ${from + 49999}) g`,
    )
    await psql(
      `INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id) SELECT 1000000 + g / 40, '!bench' || (g % 500) || ':bench', 'm.room.member', '@u' || (g % 2000) || ':bench', '\\$bench' || g || ':bench' FROM generate_series(${from * 4}, ${from * 4 + 199999}) g`,
    )
  }
  await psql('VACUUM ANALYZE')
}
const databaseMiB =
  Math.round(
    (Number((await exec(oldId, `runuser -u postgres -- psql -XAt -d synapse -c "SELECT pg_database_size('synapse')"`)).trim()) / 1048576) *
      10,
  ) / 10

say('NEW: a fresh target container')
const [newHost] = await startHosts(1, { publicKey: join(dir, 'id_ed25519.pub'), tag: 'move' })
let result
try {
  await writeKnownHosts([newHost], join(dir, 'new-known_hosts'))
  writeFileSync(
    join(dir, 'move-known_hosts'),
    readFileSync(join(dir, 'known_hosts'), 'utf8') + readFileSync(join(dir, 'new-known_hosts'), 'utf8'),
  )
  // The sandbox's inventory with NEW beside it: same vars (server name, TLS, Element), its own port.
  const doc = parseDocument(readFileSync(join(dir, 'inventory.yaml'), 'utf8'))
  const old = doc.getIn(['hosts', 'sandbox']).toJSON()
  old.ssh.knownHostsFile = './move-known_hosts'
  doc.setIn(['hosts', 'new'], { ...old, ssh: { ...old.ssh, port: newHost.port } })
  // OLD is only read by the move: named with what it holds.
  doc.setIn(['hosts', 'sandbox'], { ...old, roles: ['postgres', 'synapse'] })
  const inventory = join(dir, 'move.yaml')
  writeFileSync(inventory, doc.toString({ lineWidth: 0 }))
  const oldPort = Number(env.SANDBOX_SSH_PORT)

  const raw = []
  const rawCat = (when) => {
    const l = load()
    const s = rawPipe(oldPort, newHost.port, 'cat /var/tmp/bench-blob', 'cat > /var/tmp/bench-blob')
    raw.push({ what: 'ssh OLD cat FILE | ssh NEW "cat > FILE"', when, seconds: s, MiBps: Math.round((MEDIA_MIB / s) * 10) / 10, load1: l })
    say(`raw ssh cat (${when}): ${s} s, ${raw.at(-1).MiBps} MiB/s, load ${l}`)
  }
  rawCat('before the move')
  {
    const l = load()
    const s = rawPipe(
      oldPort,
      newHost.port,
      `cd ${MEDIA} && tar --create --file=- .`,
      'mkdir -p /var/tmp/bench-tar && cd /var/tmp/bench-tar && tar --extract --file=-',
    )
    raw.push({
      what: 'ssh OLD "tar -c media" | ssh NEW "tar -x" (OpenSSH)',
      when: 'before the move',
      seconds: s,
      MiBps: Math.round((mediaBytes / 1048576 / s) * 10) / 10,
      load1: l,
    })
    say(`raw tar (OpenSSH): ${s} s, ${raw.at(-1).MiBps} MiB/s, load ${l}`)
    await exec(newHost.id, 'rm -rf /var/tmp/bench-tar')
  }

  say('provision move')
  const loadAtMove = load()
  const moved = await provision(['move', '--inventory', inventory, '--from', 'sandbox', '--to', 'new', '--json'])
  const report = JSON.parse(moved.stdout)
  if (report.status !== 'moved') throw new Error(`move: ${report.status}: ${report.error}`)
  const step = (name) => report.steps.find((s) => s.name === name)
  const media1 = step('media-1')
  const copyMiBps = Math.round((media1.bytes / 1048576 / (media1.durationMs / 1000)) * 10) / 10
  say(`move: ${moved.seconds} s, downtime ${report.downtimeMs / 1000} s, media copy ${copyMiBps} MiB/s, peak RSS ${moved.peakRssMiB} MiB`)
  for (const s of report.steps)
    say(`  ${s.name}: ${s.durationMs / 1000} s${s.bytes !== undefined ? ` (${Math.round(s.bytes / 104857.6) / 10} MiB)` : ''}`)
  rawCat('after the move')

  const sums = (id) => exec(id, `cd ${MEDIA} && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum | sha256sum`)
  const [a, b] = await Promise.all([sums(oldId), sums(newHost.id)])
  if (a !== b) throw new Error('the media on NEW differ from OLD')

  const rawCatMean = raw.filter((r) => r.what.startsWith('ssh OLD cat')).reduce((s, r) => s + r.MiBps, 0) / 2
  result = {
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      load1AtStart: loadAtStart,
      load1AtMove: loadAtMove,
      load1AtEnd: load(),
    },
    hosts: { old: `sandbox container ${oldId} (provision sandbox)`, new: `fresh ${process.env.BENCH_IMAGE}` },
    mediaBytes,
    databaseBytes: report.old.databaseBytes,
    databaseMiBRequested: DB_MIB,
    databaseMiB,
    move: {
      seconds: moved.seconds,
      peakRssMiB: moved.peakRssMiB,
      downtimeSeconds: report.downtimeMs / 1000,
      backgroundUpdatesSeconds: report.backgroundUpdatesMs / 1000,
      steps: report.steps.map((s) => ({
        name: s.name,
        seconds: s.durationMs / 1000,
        ...(s.bytes !== undefined ? { bytes: s.bytes } : {}),
      })),
      mediaCopyMiBps: copyMiBps,
    },
    raw,
    mediaCopyVsRawSshCat: Math.round((copyMiBps / rawCatMean) * 1000) / 1000,
    mediaIdentical: true,
    note: 'load1 is recorded per measurement above: on a busy machine every time is an upper bound. Each byte goes OLD -> this machine -> NEW over SSH on loopback, for the move and for raw ssh alike.',
  }
  mkdirSync(dirname(OUT), { recursive: true })
  writeFileSync(OUT, JSON.stringify(result, null, 2) + '\n')
  say(`wrote ${OUT}`)
} finally {
  if (!process.env.BENCH_KEEP) {
    await stopHosts([newHost])
    execFileSync(process.execPath, [join(root, 'bin/provision.js'), 'sandbox', '--down'], { env, stdio: 'inherit' })
  }
}
