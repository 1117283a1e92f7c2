import { execFile } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { GenericContainer, Network, Wait, type StartedNetwork, type StartedTestContainer } from 'testcontainers'
import { targetImage } from './docker.js'
import { DEFAULT_SUITE } from './suites.js'

const run = promisify(execFile)

/** A real systemd target host in a container, reachable over real SSH. */
export interface TestHost {
  /** Name on the test network (other hosts resolve it). */
  name: string
  container: StartedTestContainer
  /** Where the controller connects: 127.0.0.1 and the mapped port of 22. */
  sshHost: string
  sshPort: number
  /** Address on the test network. */
  ip: string
  /** Host port mapped to a container port given in startHosts' `ports`. */
  port(containerPort: number): number
  /** Run a command inside the container as root, bypassing SSH (for assertions only). */
  exec(command: string): Promise<{ exitCode: number; output: string; stdout: string; stderr: string }>
}

export interface TestHosts {
  hosts: TestHost[]
  network: StartedNetwork
  /** Private key accepted for root and for the sudo user `deploy`. */
  keyFile: string
  /** known_hosts with every host's real keys as `[127.0.0.1]:port`. */
  knownHostsFile: string
  dir: string
  get(name: string): TestHost
  stop(): Promise<void>
}

let keyPair: Promise<{ dir: string; keyFile: string; publicKey: string }> | undefined

function controllerKey() {
  keyPair ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mp-key-'))
    const keyFile = join(dir, 'id_ed25519')
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'matrix-provision-tests', '-f', keyFile])
    return { dir, keyFile, publicKey: await readFile(`${keyFile}.pub`, 'utf8') }
  })()
  return keyPair
}

/** Start hosts on one user-defined network; resolves when systemd reports `running` on each. */
export { DEFAULT_SUITE } from './suites.js'

export interface StartOptions {
  /** A Debian codename with a base image (docker.ts's Suite: bookworm, trixie, bullseye). */
  suite?: string
  /** Container ports to map to the controller (22 always is). */
  ports?: number[]
  /** Extra DNS names per host on the test network (server names, vhost names). */
  aliases?: Record<string, string[]>
}

export async function startHosts(names: string[], options: StartOptions = {}): Promise<TestHosts> {
  const suite = options.suite ?? DEFAULT_SUITE
  const { keyFile, publicKey } = await controllerKey()
  const dir = await mkdtemp(join(tmpdir(), 'mp-hosts-'))
  const network = await new Network().start()
  const started: TestHost[] = []
  try {
    // allSettled: when one host fails, the others still starting are in `started` before we clean up.
    const results = await Promise.allSettled(
      names.map(async (name) => {
        const container = await new GenericContainer(targetImage(suite))
          .withPullPolicy({ shouldPull: () => false })
          .withName(`mp-${name}-${Math.random().toString(36).slice(2, 8)}`)
          .withHostname(name)
          .withNetwork(network)
          .withNetworkAliases(name, ...(options.aliases?.[name] ?? []))
          .withAddedCapabilities('SYS_ADMIN', 'NET_ADMIN')
          .withSecurityOpt('seccomp=unconfined', 'apparmor=unconfined')
          .withBindMounts([{ source: '/sys/fs/cgroup', target: '/sys/fs/cgroup', mode: 'rw' }])
          .withTmpFs({ '/run': 'rw', '/run/lock': 'rw', '/tmp': 'rw' })
          .withExposedPorts(22, ...(options.ports ?? []))
          .withCopyContentToContainer([
            { content: publicKey, target: '/root/.ssh/authorized_keys', mode: 0o600 },
            { content: publicKey, target: '/home/deploy/.ssh/authorized_keys', mode: 0o600 },
          ])
          .withCommand(['/sbin/init'])
          // Only sshd must listen at start; other mapped ports (443) open once provisioned.
          .withWaitStrategy(Wait.forSuccessfulCommand("ss -Htln | grep -q ':22 '"))
          .withStartupTimeout(120_000)
          .start()
        const exec = async (command: string) => container.exec(['sh', '-c', command])
        const host: TestHost = {
          name,
          container,
          sshHost: '127.0.0.1',
          sshPort: container.getMappedPort(22),
          ip: container.getIpAddress(network.getName()),
          port: (p) => container.getMappedPort(p),
          exec,
        }
        started.push(host)
        // Images committed before the test drop-in was renamed (the guide image is built once per machine): zz- must sort last.
        const boot = await exec(
          'systemctl is-system-running --wait; chown -R deploy:deploy /home/deploy/.ssh; d=/etc/systemd/system/service.d; if [ -e $d/10-test-container.conf ]; then mv $d/10-test-container.conf $d/zz-test-container.conf && systemctl daemon-reload; fi',
        )
        if (!boot.output.includes('running')) {
          const failed = await exec('systemctl --failed --no-legend')
          throw new Error(`host ${name} did not boot cleanly: ${boot.output.trim()}\n${failed.output}`)
        }
      }),
    )
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failure) throw failure.reason
    const knownHostsFile = join(dir, 'known_hosts')
    const lines: string[] = []
    for (const host of started) {
      const keys = await host.exec('cat /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub')
      for (const key of keys.stdout.trim().split('\n')) {
        const [type, b64] = key.split(' ')
        lines.push(`[${host.sshHost}]:${host.sshPort} ${type} ${b64}`)
      }
    }
    await writeFile(knownHostsFile, lines.join('\n') + '\n')
    const ordered = names.map((n) => started.find((h) => h.name === n)!)
    return {
      hosts: ordered,
      network,
      keyFile,
      knownHostsFile,
      dir,
      get(name) {
        const h = ordered.find((x) => x.name === name)
        if (!h) throw new Error(`no test host ${name}`)
        return h
      },
      async stop() {
        await Promise.all(ordered.map((h) => h.container.stop({ timeout: 5_000 }).catch(() => undefined)))
        await network.stop().catch(() => undefined)
      },
    }
  } catch (error) {
    await Promise.all(started.map((h) => h.container.stop({ timeout: 2_000 }).catch(() => undefined)))
    await network.stop().catch(() => undefined)
    throw error
  }
}
