import { describe, expect, it } from 'vitest'
import { judgeUpdater } from '../../tasks/synapse/background-updates.js'

describe('background updater health (check and status)', () => {
  it('fails on an updater that aborted since main started, naming the pending updates and the last error', () => {
    const r = judgeUpdater({ pending: ['device_lists_changes_in_room_unconverted_idx'], unknown: ['device_lists_changes_in_room_unconverted_idx'], aborted: true, lastError: "Error doing update: 'device_lists_changes_in_room_unconverted_idx'" }, '1.158.0')
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
    expect(judgeUpdater({ pending: ['a', 'b'], unknown: [], aborted: false }, '1.163.2')).toEqual({ ok: true, detail: '2 pending, running: a, b' })
    expect(judgeUpdater({ pending: [], unknown: [], aborted: false }, '1.163.2')).toEqual({ ok: true, detail: 'none pending' })
  })
})
