/**
 * Whether this run is CI, the one definition the test setup and vitest.config.ts share: CI set to
 * anything but empty or "false" (CI=true, CI=1, CI=yes). In CI, container tests never skip.
 */
export function isCI(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.CI?.trim().toLowerCase()
  return v !== undefined && v !== '' && v !== 'false'
}

export const NO_DOCKER = 'no Docker engine answers (start dockerd, or run `bash .ci/run`)'

/** No Docker engine: outside CI the container tests skip with this reason; in CI the run fails here. */
export function skipReasonWithoutDocker(env: NodeJS.ProcessEnv = process.env): string {
  if (isCI(env)) throw new Error(`CI=${env.CI} and ${NO_DOCKER}: container tests must run in CI`)
  return NO_DOCKER
}
