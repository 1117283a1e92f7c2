import { describe, expect, it } from 'vitest'
import { judgeUpdater } from '../../tasks/synapse/background-updates.js'
import { renderStatus } from '../../src/commands/status/render.js'
import { statusFailed, type HostStatus } from '../../src/commands/status/read-status.js'

describe('background updater health (check and status)', () => {
  it('fails on an updater that aborted since main started, naming the pending updates and the last error', () => {
    const r = judgeUpdater(
      {
        pending: ['device_lists_changes_in_room_unconverted_idx'],
        unknown: ['device_lists_changes_in_room_unconverted_idx'],
        aborted: true,
        lastError: "Error doing update: 'device_lists_changes_in_room_unconverted_idx'",
      },
      '1.158.0',
    )
    expect(r.ok).toBe(false)
    expect(r.detail).toContain('ABORTED')
    expect(r.detail).toContain('device_lists_changes_in_room_unconverted_idx')
    expect(r.detail).toContain("last error: Error doing update: 'device_lists_changes_in_room_unconverted_idx'")
  })
  it('fails before the abort on a pending update the running code does not register', () => {
    const r = judgeUpdater({ pending: ['known_one', 'mp_unknown'], unknown: ['mp_unknown'], aborted: false }, '1.158.0')
    expect(r).toMatchObject({ ok: false })
    expect(r.detail).toContain('Synapse 1.158.0 does not register: mp_unknown')
  })
  it('passes with known updates running, named, and with none', () => {
    expect(judgeUpdater({ pending: ['a', 'b'], unknown: [], aborted: false }, '1.163.2')).toEqual({
      ok: true,
      detail: '2 pending, running: a, b',
    })
    expect(judgeUpdater({ pending: [], unknown: [], aborted: false }, '1.163.2')).toEqual({ ok: true, detail: 'none pending' })
  })

  it('provision status names it, and fails on it', () => {
    const host: HostStatus = {
      host: 'h',
      windowS: 1,
      cacheFactor: 0.5,
      processes: [],
      advice: [],
      backgroundUpdates: judgeUpdater({ pending: ['x'], unknown: ['x'], aborted: true }, '1.158.0'),
    }
    expect(renderStatus({ hosts: [host], durationMs: 1 })).toContain('background updates: FAILING: the background updater ABORTED')
    expect(statusFailed({ hosts: [host], durationMs: 1 })).toBe(true)
    const ok = { ...host, backgroundUpdates: judgeUpdater({ pending: [], unknown: [], aborted: false }, '1.158.0') }
    expect(renderStatus({ hosts: [ok], durationMs: 1 })).toContain('background updates: none pending')
    expect(statusFailed({ hosts: [ok], durationMs: 1 })).toBe(false)
  })
})
