import { describe, expect, it } from 'vitest'
import { databaseDumpCommand, databaseRestoreCommand } from '../../src/synapse/backup/database-dump.js'

describe('database dump', () => {
  it("is Synapse's backup guide's: custom format, without the one-time keys' rows, as postgres over the socket", () => {
    expect(databaseDumpCommand('synapse').text).toBe(
      'cd / && runuser -u postgres -- pg_dump --format=custom --no-password --exclude-table-data=e2e_one_time_keys_json synapse',
    )
  })
  it('restores as the inventory role and quotes names', () => {
    expect(databaseRestoreCommand('syn db', 'synapse_user').text).toBe(
      "cd / && runuser -u postgres -- pg_restore --exit-on-error --no-owner --role=synapse_user --dbname 'syn db'",
    )
  })
})
