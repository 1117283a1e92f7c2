import { describe, expect, it } from 'vitest'
import { unexpectedSynapseErrors } from '../support/synapse-journal.js'

const at = (pid: number, text: string) => `1764500000.000000 hs python[${pid}]: ${text}`

describe("the e2e tests' journal judge (test/support/synapse-journal.ts)", () => {
  const race = [
    at(7, 'synapse.app.homeserver - 123 - INFO - sentinel - Shutting down...'),
    at(7, "synapse.metrics.background_process_metrics - 250 - ERROR - send-cmd-3 - Background process 'send-cmd' threw an exception"),
    at(7, 'txredisapi.ConnectionError: Lost connection'),
  ]

  it("allows only Synapse's shutdown race, after the process's own 'Shutting down...'", () => {
    expect(
      unexpectedSynapseErrors([at(7, 'synapse.storage - 1 - INFO - main - ready'), ...race, at(8, 'INFO - started')].join('\n')),
    ).toEqual([])
  })

  it('reports an error before the shutdown line, a Traceback, and any other error while stopping, by process', () => {
    const journal = [
      at(7, 'synapse.handlers - 9 - ERROR - GET-1 - Failed to handle'),
      ...race,
      at(7, 'builtins.KeyError: profile_updates'),
      at(9, 'Traceback (most recent call last):'),
    ].join('\n')
    expect(unexpectedSynapseErrors(journal)).toEqual([
      `pid 7: ${at(7, 'synapse.handlers - 9 - ERROR - GET-1 - Failed to handle')}`,
      `pid 7 (stopping): ${at(7, 'builtins.KeyError: profile_updates')}`,
      `pid 9: ${at(9, 'Traceback (most recent call last):')}`,
    ])
    // With a narrower `live` pattern (the upgrade e2e's workers: Tracebacks only), a running process's ERROR line passes.
    expect(unexpectedSynapseErrors(journal, /Traceback/)).toEqual([
      `pid 7 (stopping): ${at(7, 'builtins.KeyError: profile_updates')}`,
      `pid 9: ${at(9, 'Traceback (most recent call last):')}`,
    ])
  })
})
