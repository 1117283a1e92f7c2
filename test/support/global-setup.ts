import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import type { TestProject } from 'vitest/node'
import { isCI, skipReasonWithoutDocker } from './ci.js'
import { baseImageFor, dockerAnswers, targetImage } from './docker.js'
import { OLD_SUITE, TARGET_SUITES } from './suites.js'

const run = promisify(execFile)
const dockerDir = fileURLToPath(new URL('../../docker/', import.meta.url))

declare module 'vitest' {
  export interface ProvidedContext {
    docker: boolean
    dockerSkipReason: string
  }
}

/**
 * Container tests need a Docker engine. Without one they are skipped with a loud reason,
 * except in CI (isCI: CI=true, CI=1, any value but empty or "false"), where a missing engine fails the
 * run: CI can never pass by skipping.
 */
export default async function setup(project: TestProject): Promise<void> {
  const ok = await dockerAnswers()
  if (!ok) {
    const reason = skipReasonWithoutDocker()
    console.warn(`\n!!! SKIPPING container tests: ${reason}\n`)
    project.provide('docker', false)
    project.provide('dockerSkipReason', reason)
    return
  }
  // Build the target images the tests use (cached layers make this ~1 s when nothing changed).
  for (const suite of [...TARGET_SUITES, OLD_SUITE]) {
    const base = baseImageFor(suite)
    const have = await run('docker', ['image', 'inspect', base]).then(
      () => true,
      () => false,
    )
    if (!have) {
      const msg = `base image ${base} is missing: run docker/build-base-images.sh ${suite}`
      if (isCI()) throw new Error(msg)
      console.warn(`!!! ${msg}; tests on ${suite} will fail`)
      continue
    }
    await run('docker', ['build', '-q', '-t', targetImage(suite), '--build-arg', `BASE=${base}`, dockerDir], { maxBuffer: 1 << 24 })
  }
  project.provide('docker', true)
  project.provide('dockerSkipReason', '')
}
