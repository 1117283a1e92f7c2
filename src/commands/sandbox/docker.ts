import { controller$ } from '../../artifacts/controller-shell.js'
import { SandboxError } from './settings.js'
import { SYSTEMD_RUN_FLAGS } from './run-flags.js'

/** The docker CLI: every call the sandbox makes goes through here. */

/** Label on the sandbox container, so --down never removes a container it did not make. */
export const LABEL = 'matrix-provision.sandbox'

interface Result {
  ok: boolean
  code: number | null
  stdout: string
  stderr: string
}

/** Run `docker args...`; never throws: a failure is the result (a missing docker binary is code 127). */
export async function tryDocker(
  args: string[],
  options: { input?: string; cwd?: string; onLine?: (line: string) => void } = {},
): Promise<Result> {
  const $ = await controller$(options)
  const r = await $`docker ${args}`.nothrow()
  return { ok: r.ok, code: r.exitCode, stdout: r.stdout, stderr: r.stderr }
}

/** The last meaningful line of a failed command: one line for an error message. */
export function lastLine(r: { stdout: string; stderr: string }): string {
  const lines = (r.stderr.trim() || r.stdout.trim())
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
  return lines.at(-1) ?? 'no output'
}

/** Run `docker args...`; stdout, or a one-line SandboxError saying which call failed and why. */
export async function docker(
  args: string[],
  options: { input?: string; cwd?: string; onLine?: (line: string) => void } = {},
): Promise<string> {
  const r = await tryDocker(args, options)
  if (!r.ok) throw new SandboxError(`docker ${args.slice(0, 2).join(' ')} failed: ${lastLine(r)}`)
  return r.stdout
}

/** The engine's version, or why it does not answer. */
export async function engineVersion(): Promise<{ version: string } | { problem: string }> {
  const r = await tryDocker(['info', '--format', '{{.ServerVersion}}'])
  if (r.ok && r.stdout.trim()) return { version: r.stdout.trim() }
  return { problem: r.code === 127 ? 'the docker command is not installed' : lastLine(r) }
}

export async function imageExists(image: string): Promise<boolean> {
  return (await tryDocker(['image', 'inspect', '--format', '{{.Id}}', image])).ok
}

export interface ContainerInfo {
  running: boolean
  ours: boolean
  /** Host port published for a container port ("22/tcp" -> 2222). */
  ports: Record<string, number>
}

export async function inspectContainer(name: string): Promise<ContainerInfo | undefined> {
  const r = await tryDocker([
    'container',
    'inspect',
    '--format',
    `{{json .State.Running}}\t{{json .Config.Labels}}\t{{json .HostConfig.PortBindings}}`,
    name,
  ])
  if (!r.ok) return undefined
  const [running, labels, bindings] = r.stdout
    .trim()
    .split('\t')
    .map((part) => JSON.parse(part) as unknown)
  const ports: Record<string, number> = {}
  for (const [containerPort, binds] of Object.entries((bindings ?? {}) as Record<string, { HostPort?: string }[] | null>)) {
    const hostPort = Number(binds?.[0]?.HostPort)
    if (hostPort) ports[containerPort] = hostPort
  }
  return { running: running === true, ours: Boolean((labels as Record<string, string> | null)?.[LABEL]), ports }
}

/** Start the sandbox container: systemd as PID 1 with the flags that work without --privileged. */
export async function runContainer(o: { name: string; image: string; sshPort: number; httpsPort: number }): Promise<void> {
  const r = await tryDocker([
    'run',
    '-d',
    '--name',
    o.name,
    '--hostname',
    'sandbox',
    '--label',
    `${LABEL}=1`,
    ...SYSTEMD_RUN_FLAGS,
    '-p',
    `127.0.0.1:${o.sshPort}:22`,
    '-p',
    `127.0.0.1:${o.httpsPort}:443`,
    o.image,
    '/sbin/init',
  ])
  if (r.ok) return
  // A failed port binding leaves a created container behind: remove it so the next run starts clean.
  await tryDocker(['rm', '-f', '-v', o.name])
  const why = lastLine(r)
  if (/port is already allocated|address already in use/i.test(why)) {
    throw new SandboxError(
      `port ${o.sshPort} or ${o.httpsPort} on 127.0.0.1 is taken (${why}); choose others with SANDBOX_SSH_PORT and SANDBOX_HTTPS_PORT`,
      2,
    )
  }
  throw new SandboxError(`docker run failed: ${why}`)
}

/** `docker exec` as root; input goes to the command's stdin. */
export function exec(name: string, argv: string[], input?: string) {
  return tryDocker(['exec', ...(input === undefined ? [] : ['-i']), name, ...argv], input === undefined ? {} : { input })
}

/**
 * Wait until systemd has booted. Right after `docker run` the first exec can fail with
 * "Failed to connect to bus" (dbus not up yet): retried for a while. Returns 'running' or 'degraded'.
 */
export async function waitForSystemd(name: string): Promise<{ state: string; failed: string }> {
  let state = ''
  for (let attempt = 0; attempt < 30; attempt++) {
    const r = await exec(name, ['systemctl', 'is-system-running', '--wait'])
    state = r.stdout.trim().split('\n').at(-1) ?? ''
    if (state === 'running' || state === 'degraded') break
    state ||= lastLine(r)
    await new Promise((done) => setTimeout(done, 1_000))
  }
  if (state !== 'running' && state !== 'degraded') throw new SandboxError(`systemd in container ${name} did not finish booting: ${state}`)
  const failed = state === 'degraded' ? (await exec(name, ['systemctl', '--failed', '--no-legend', '--plain'])).stdout.trim() : ''
  return { state, failed }
}
