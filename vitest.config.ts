import { defineConfig } from 'vitest/config'
import { isCI } from './test/support/ci.js'

// Two test files at a time, across all projects: a container file (systemd hosts over real SSH, Postgres,
// Synapse, Apache) keeps about one of CI's 2 cores busy on average, so one at a time left the other idle
// (~47 min). Files keep vitest's order: e2e, integration, unit, each longest first (the last run's
// durations; on a fresh clone, largest first), so no long file starts last. What two files could share
// is theirs alone or built once under a lock: containers, networks and temp dirs get unique names, the
// caches in .cache (wheelhouses, the Element stand-in, the nio venv, the guide image) are filled under
// withCacheLock (src/artifacts/cache-lock.ts), the sandbox's ports lie outside Docker's range. A busy
// machine is a real condition: a test that fails with another file beside it is a defect to find.
export default defineConfig({
  test: {
    maxWorkers: 2,
    // A test that asserts nothing fails ("expected any number of assertion, but got none"): every project inherits it.
    expect: { requireAssertions: true },
    // The JUnit report is what .ci/run counts (and fails on skipped tests); CI as test setup defines it.
    reporters: isCI() ? ['default', 'junit'] : ['default'],
    outputFile: { junit: 'reports/junit.xml' },
    projects: [
      // Unit tests have no timing to prove: vitest's 5 s default failed six plan tests (5-9 s each) on a
      // 2-core machine with four busy processes beside it (the CI machine is shared and may be busy).
      {
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 60_000, globalSetup: ['test/support/build-cli.ts'] },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          globalSetup: ['test/support/build-cli.ts', 'test/support/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 900_000,
          hookTimeout: 900_000,
          globalSetup: ['test/support/build-cli.ts', 'test/support/global-setup.ts'],
        },
      },
    ],
  },
})
