import { describe, expect, it } from 'vitest'
import {
  decideRollback,
  unhandledByOlder,
  type CodeSchema,
  type DatabaseSchema,
  type RollbackInput,
} from '../../tasks/synapse/schema-compat.js'

/**
 * The rollback rule as data: 1.158.0 -> 1.160.0 (the upgrade e2e's broken case). 1.160.0's delta 94/08
 * schedules device_lists_changes_in_room_unconverted_idx, an update 1.158.0 does not register: its
 * updater fails on it 5 times and aborts (seen in the e2e's journal before this rule).
 */
const old: CodeSchema = { version: '1.158.0', schemaVersion: 94, compatVersion: 92, deltas: ['94/01_a.sql', '94/06_b.sql'] }
const before: DatabaseSchema = {
  version: 94,
  upgraded: true,
  compatVersion: 92,
  appliedDeltas: ['94/01_a.sql', '94/06_b.sql'],
  sizeBytes: 1,
  backgroundUpdates: ['legacy_update_only_in_rows'],
}
const afterNewer: DatabaseSchema = {
  ...before,
  appliedDeltas: [...before.appliedDeltas, '94/07_profile_updates.sql', '94/08_device_lists_changes_in_room_unconverted_idx.sql'],
  backgroundUpdates: ['legacy_update_only_in_rows', 'device_lists_changes_in_room_unconverted_idx'],
}
const known = ['event_push_summary_unique_index', 'device_lists_changes_in_room_by_room_index']
const base: RollbackInput = {
  to: old,
  knownUpdates: known,
  now: afterNewer,
  before,
  dump: '/var/backups/matrix-synapse/synapse-1.158.0-before-1.160.0.dump',
  served: false,
  consent: false,
  since: '2026-12-07T09:00:00.000Z',
}

describe('rollback decided from the database', () => {
  it('names what the older code cannot handle: unknown scheduled updates and the deltas applied since the dump; rows pending before the upgrade count as known', () => {
    expect(unhandledByOlder(base)).toEqual({
      updates: ['device_lists_changes_in_room_unconverted_idx'],
      newDeltas: ['94/07_profile_updates.sql', '94/08_device_lists_changes_in_room_unconverted_idx.sql'],
    })
  })

  it('a plain switch when the newer code left nothing the older cannot handle (its updates done, compat within the window)', () => {
    const done = { ...base, now: { ...afterNewer, backgroundUpdates: ['legacy_update_only_in_rows'] }, served: true }
    const d = decideRollback(done)
    expect(d.action).toBe('switch')
    expect(d.reason).toContain('94/08_device_lists_changes_in_room_unconverted_idx.sql')
    // Nothing pending at all, no record of the state before: still a switch.
    expect(decideRollback({ ...done, before: undefined, now: { ...afterNewer, backgroundUpdates: [] } }).action).toBe('switch')
  })

  it('restores the dump by itself when the newer code never served, and says nothing was lost', () => {
    const d = decideRollback(base)
    expect(d).toMatchObject({ action: 'restore', dump: base.dump, lost: 'nothing: the newer code never answered /health' })
    expect(d.reason).toContain('device_lists_changes_in_room_unconverted_idx')
    expect(d.reason).toContain('abort')
  })

  it('refuses when the newer code served, naming the dump, the window of writes a restore loses, and what to do; consent restores', () => {
    const d = decideRollback({ ...base, served: true })
    expect(d.action).toBe('refuse')
    expect(d.reason).toContain(base.dump)
    expect(d.reason).toContain('every write since 2026-12-07T09:00:00.000Z')
    expect(d.reason).toContain('--restore-dump')
    expect(decideRollback({ ...base, served: true, consent: true })).toMatchObject({
      action: 'restore',
      dump: base.dump,
      lost: 'every write since 2026-12-07T09:00:00.000Z (the newer code served since then)',
    })
  })

  it('refuses without a dump; the compat version alone also decides (newer than the older SCHEMA_VERSION)', () => {
    expect(decideRollback({ ...base, dump: undefined, consent: true })).toMatchObject({ action: 'refuse' })
    expect(decideRollback({ ...base, dump: undefined }).reason).toContain('no dump was taken')
    const tooNew = { ...base, now: { ...afterNewer, compatVersion: 95, backgroundUpdates: [] } }
    const d = decideRollback({ ...tooNew, served: true })
    expect(d.action).toBe('refuse')
    expect(d.reason).toContain('schema_compat_version is 95')
    expect(decideRollback(tooNew).action).toBe('restore')
  })
})
