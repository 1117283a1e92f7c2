import { join } from 'node:path'
import { controller$, isCommandFailure } from '../../artifacts/controller-shell.js'
import { docker, engineVersion, imageExists, inspectContainer, runContainer, tryDocker, waitForSystemd, lastLine } from './docker.js'
import { SandboxError, SUITE, type SandboxSettings } from './settings.js'

type Say = (line: string) => void

/** Docker must answer; otherwise say how to get an engine (exit 2). */
export async function requireDocker(say: Say): Promise<void> {
  const engine = await engineVersion()
  if ('problem' in engine) {
    throw new SandboxError(
      `no Docker engine answers (${engine.problem}). Start one: on Debian, apt-get install docker.io, then dockerd & (or systemctl start docker); then run provision sandbox again`,
      2,
    )
  }
  say(`docker: engine ${engine.version} answers`)
}

/** The local Debian base (debootstrap, once) and the target image on it (docker build; cached layers when nothing changed). */
export async function ensureImages(s: SandboxSettings, say: Say, verbose: boolean): Promise<void> {
  if (await imageExists(s.baseImage)) {
    say(`image ${s.baseImage}: present`)
  } else {
    const rootUser = process.getuid?.() === 0
    const debootstrap = (await (await controller$())`command -v debootstrap`.nothrow()).ok
    if (!rootUser || !debootstrap) {
      throw new SandboxError(
        `base image ${s.baseImage} is missing and cannot be built here: docker/build-base-images.sh needs root and debootstrap (${[!rootUser && 'not root', !debootstrap && 'debootstrap not installed: apt-get install debootstrap'].filter(Boolean).join('; ')})`,
        2,
      )
    }
    say(`image ${s.baseImage}: missing; building it with debootstrap (a few minutes, once)`)
    try {
      const $ = await controller$({ cwd: s.root, onLine: verbose ? (l) => say(`  ${l}`) : undefined })
      await $`bash ${join(s.root, 'docker', 'build-base-images.sh')} ${SUITE}`
    } catch (error) {
      const detail = isCommandFailure(error) ? lastLine(error) : String(error)
      throw new SandboxError(
        `building ${s.baseImage} failed (docker/build-base-images.sh needs root, debootstrap and Debian's mirror): ${detail}`,
      )
    }
  }
  const started = Date.now()
  await docker(['build', '-q', '-t', s.targetImage, '--build-arg', `BASE=${s.baseImage}`, join(s.root, 'docker')], { cwd: s.root })
  say(`image ${s.targetImage}: ready (${((Date.now() - started) / 1000).toFixed(1)} s)`)
}

/** Start the container, or reuse it when it exists with the same published ports; then wait for systemd. */
export async function ensureContainer(s: SandboxSettings, say: Say): Promise<void> {
  const existing = await inspectContainer(s.name)
  if (existing && !existing.ours)
    throw new SandboxError(`a container named ${s.name} exists that provision sandbox did not make; remove it or set SANDBOX_NAME`, 2)
  if (existing) {
    const ssh = existing.ports['22/tcp']
    const https = existing.ports['443/tcp']
    if (ssh !== s.sshPort || https !== s.httpsPort) {
      throw new SandboxError(
        `container ${s.name} publishes ssh on ${ssh} and https on ${https}, not ${s.sshPort} and ${s.httpsPort}: run provision sandbox --down first, or use its ports`,
        2,
      )
    }
    if (existing.running) say(`container ${s.name}: running; reusing it`)
    else {
      say(`container ${s.name}: stopped; starting it`)
      await docker(['start', s.name])
    }
  } else {
    say(`container ${s.name}: starting from ${s.targetImage}`)
    await runContainer({ name: s.name, image: s.targetImage, sshPort: s.sshPort, httpsPort: s.httpsPort })
  }
  const boot = await waitForSystemd(s.name)
  say(
    `container ${s.name}: systemd ${boot.state}${
      boot.failed
        ? ` (failed units: ${boot.failed
            .split('\n')
            .map((l) => l.split(/\s+/)[0])
            .join(', ')})`
        : ''
    }`,
  )
}

/** Remove the container and its anonymous volumes; only one this command made. */
export async function removeContainer(s: SandboxSettings, say: Say): Promise<void> {
  const existing = await inspectContainer(s.name)
  if (!existing) {
    say(`container ${s.name}: none`)
    return
  }
  if (!existing.ours) throw new SandboxError(`container ${s.name} was not made by provision sandbox; not removing it`, 2)
  const r = await tryDocker(['rm', '-f', '-v', s.name])
  if (!r.ok) throw new SandboxError(`docker rm ${s.name} failed: ${lastLine(r)}`)
  say(`container ${s.name}: removed (with its anonymous volumes)`)
}
