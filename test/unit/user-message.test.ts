import { describe, expect, it } from 'vitest'
import { userMessage } from '../../src/commands/verb.js'
import { controller$, isCommandFailure } from '../../src/artifacts/controller-shell.js'

describe('userMessage: what the CLI prints of an error no verb handled', () => {
  it("keeps a failed controller command's output and exit code, drops zx's stack frame", async () => {
    const $ = await controller$()
    const error = await $`sh -c ${'echo gpg: signing failed >&2; exit 3'}`.then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(isCommandFailure(error)).toBe(true)
    expect((error as Error).message).toMatch(/\n\s+at \S/)
    const shown = userMessage(error)
    expect(shown).toContain('gpg: signing failed')
    expect(shown).toContain('exit code: 3')
    expect(shown).not.toMatch(/^\s+at \S/m)
  })

  it('leaves a plain message as it is', () => {
    expect(userMessage(new Error('web: connection refused'))).toBe('web: connection refused')
    expect(userMessage('a string')).toBe('a string')
  })
})
