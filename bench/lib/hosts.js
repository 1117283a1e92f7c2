// Target hosts for the bench: real systemd containers of the bench image, reached over real SSH on
// 127.0.0.1:<mapped port>, with the sandbox's run flags (no --privileged), from the build (`npm run build`).
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { SYSTEMD_RUN_FLAGS } from '../../dist/src/commands/sandbox/run-flags.js'

const run = promisify(execFile)
export const IMAGE = process.env.BENCH_IMAGE ?? 'matrix-provision/bench-target:bookworm'
export const LABEL = 'matrix-provision.bench'

const docker = async (args, opts = {}) => (await run('docker', args, { maxBuffer: 16 << 20, ...opts })).stdout

export const exec = (id, script) => docker(['exec', id, 'sh', '-c', script])

/** Run `fn` over items with at most `limit` at once. */
export async function pool(items, limit, fn) {
  const out = new Array(items.length)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i], i)
    }),
  )
  return out
}

async function waitRunning(id) {
  const deadline = Date.now() + 120_000
  for (;;) {
    // Right after start, systemd's bus is not up yet and systemctl fails at once: retry.
    const state = await exec(id, 'systemctl is-system-running --wait 2>&1 || true').catch((e) => String(e))
    if (/^(running|degraded)/m.test(state)) return state.trim()
    if (Date.now() > deadline) throw new Error(`container ${id.slice(0, 12)} did not boot: ${state.trim()}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/**
 * Start n hosts; resolves when each runs systemd and sshd with its own fresh host keys.
 * @returns {Promise<{ name: string, id: string, port: number }[]>}
 */
export async function startHosts(n, { publicKey, tag }) {
  const started = []
  try {
    await pool(
      Array.from({ length: n }, (_, i) => i),
      Number(process.env.BENCH_START_CONCURRENCY ?? 5),
      async (i) => {
        const name = `bench-${String(i + 1).padStart(2, '0')}`
        // A second try when a container vanishes or hangs while booting (seen on a busy shared Docker engine).
        for (let attempt = 1; ; attempt++) {
          const id = (
            await docker([
              'run',
              '-d',
              '--label',
              `${LABEL}=${tag}`,
              '--name',
              `mp-${tag}-${name}-${attempt}`,
              '--hostname',
              name,
              ...SYSTEMD_RUN_FLAGS,
              '-p',
              '127.0.0.1::22',
              '-v',
              `${publicKey}:/root/.ssh/authorized_keys:ro`,
              IMAGE,
            ])
          ).trim()
          const host = { name, id, port: 0 }
          started.push(host)
          try {
            await waitRunning(id)
            // sshd answers only once regen-host-keys made this container's keys.
            await exec(
              id,
              'for i in $(seq 1 100); do systemctl is-active -q ssh.service && [ -s /etc/ssh/ssh_host_ed25519_key.pub ] && exit 0; sleep 0.1; done; exit 1',
            )
            const mapped = (await docker(['port', id, '22/tcp'])).trim().split('\n')[0]
            host.port = Number(mapped.slice(mapped.lastIndexOf(':') + 1))
            return
          } catch (error) {
            started.splice(started.indexOf(host), 1)
            await stopHosts([host])
            if (attempt >= 2) throw error
            process.stderr.write(`bench: ${name} did not come up (${String(error).split('\n')[0]}); starting it again\n`)
          }
        }
      },
    )
    return started.sort((a, b) => a.name.localeCompare(b.name))
  } catch (error) {
    await stopHosts(started)
    throw error
  }
}

/** known_hosts lines for every host and key type, as `[127.0.0.1]:port type key`. */
export async function writeKnownHosts(hosts, file) {
  const lines = await pool(hosts, 8, async (h) => {
    const keys = await exec(h.id, 'cat /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub')
    return keys
      .trim()
      .split('\n')
      .map((k) => `[127.0.0.1]:${h.port} ${k.split(' ').slice(0, 2).join(' ')}`)
  })
  writeFileSync(file, lines.flat().join('\n') + '\n')
}

export async function stopHosts(hosts) {
  if (hosts.length) await docker(['rm', '-f', '-v', ...hosts.map((h) => h.id)]).catch(() => undefined)
}

/** Containers left by an interrupted bench. */
export async function removeLeftovers() {
  const ids = (await docker(['ps', '-aq', '--filter', `label=${LABEL}`])).trim().split('\n').filter(Boolean)
  if (ids.length) await docker(['rm', '-f', '-v', ...ids]).catch(() => undefined)
}

/** Back to the state of a new container as far as the workload (and each tool's own leftovers) go. */
export const RESET_SCRIPT = [
  'systemctl disable --now cron.service >/dev/null 2>&1',
  'rm -rf /srv/bench /var/lib/bench /var/lib/matrix-provision /root/.ansible',
  'cp -a /etc/sysctl.conf.bench-pristine /etc/sysctl.conf',
  '! systemctl is-active -q cron.service',
].join('; ')

export async function resetHosts(hosts) {
  await pool(hosts, 8, (h) => exec(h.id, RESET_SCRIPT))
}

/** A shell check that the workload is in place on a host: prints OK or what is wrong. */
export function checkScript(w) {
  const sums = w.files.map((f) => `${createHash('sha256').update(f.content).digest('hex')}  ${f.path}`).join('\n')
  return [
    'bad=""',
    `printf '%s\\n' '${sums}' | sha256sum -c --quiet - >/dev/null 2>&1 || bad="$bad files"`,
    `[ "$(stat -c %a ${w.files.map((f) => f.path).join(' ')} | sort -u)" = "${Number.parseInt(w.files[0].mode, 8).toString(8)}" ] || bad="$bad modes"`,
    `[ "$(stat -c %a ${w.dir.path})" = "${Number.parseInt(w.dir.mode, 8).toString(8)}" ] || bad="$bad dir"`,
    `dpkg-query -W -f '\${Status}\\n' ${w.packages.join(' ')} | grep -vq 'install ok installed' && bad="$bad packages"`,
    `systemctl is-active -q ${w.service} && systemctl is-enabled -q ${w.service} || bad="$bad service"`,
    `[ "$(grep -cE '${w.line.match.replace(/\\s/g, '[[:space:]]')}' ${w.line.path})" = 1 ] && grep -qFx '${w.line.line}' ${w.line.path} || bad="$bad line"`,
    `[ -e ${w.command.creates} ] || bad="$bad command"`,
    'echo "${bad:-OK}"',
  ].join('\n')
}

export async function checkHosts(hosts, w) {
  const script = checkScript(w)
  const results = await pool(hosts, 8, async (h) => `${h.name}:${(await exec(h.id, script)).trim()}`)
  const bad = results.filter((r) => !r.endsWith(':OK'))
  if (bad.length) throw new Error(`workload not in place after the run: ${bad.join('; ')}`)
}
