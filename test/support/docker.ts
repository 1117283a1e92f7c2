import { getContainerRuntimeClient } from 'testcontainers'

// No registry is reachable and the reaper image cannot be pulled: we stop our containers ourselves.
process.env.TESTCONTAINERS_RYUK_DISABLED = 'true'

export const IMAGE_PREFIX = process.env.IMAGE_PREFIX ?? 'matrix-provision'
export type Suite = 'bullseye' | 'bookworm' | 'trixie'

/** Image the target Dockerfile builds for a base suite (or a registry BASE such as ubuntu:24.04). */
export function targetImage(suite: string): string {
  return `${IMAGE_PREFIX}/target:${suite.replace(/[^a-zA-Z0-9_.-]/g, '-')}`
}

export function baseImageFor(suite: string): string {
  return suite.includes(':') ? suite : `${IMAGE_PREFIX}/debian-systemd:${suite}`
}

export async function dockerAnswers(): Promise<boolean> {
  return getContainerRuntimeClient().then(
    () => true,
    () => false,
  )
}
