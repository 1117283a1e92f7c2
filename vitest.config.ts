import { defineConfig } from 'vitest/config'
import { isCI } from './test/support/ci.js'

// Container tests share 2 cores and one Docker engine: test files run one at a time, also across
// projects (an integration file never competes with an e2e file for the CPU).
export default defineConfig({
  test: {
    fileParallelism: false,
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
          fileParallelism: false,
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
          fileParallelism: false,
          globalSetup: ['test/support/build-cli.ts', 'test/support/global-setup.ts'],
        },
      },
    ],
  },
})
