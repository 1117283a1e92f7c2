/** `provision unlock`: kill the stuck holder of one host's lock, the one the user names. */
import { breakLock } from '../../engine/lock.js'
import { openRun } from '../run-context.js'
import { EXIT, UsageError, type Verb } from '../verb.js'

export const run: Verb = async (input) => {
  const { values, io } = input
  const { inventory, log, connect } = await openRun(input)
  // Killing a lock holder is only safe for the one holder the user saw stuck: its id and its host.
  if (!values.holder) throw new UsageError('unlock needs --holder ID: the id the lock message printed ("locked by another run: ID user@…")')
  if (!/^[0-9a-f]{12}$/.test(values.holder))
    throw new UsageError(`--holder: expected the 12 hexadecimal digits the lock message printed, got "${values.holder}"`)
  if (!values.limit || inventory.hosts.length !== 1)
    throw new UsageError(
      `unlock clears one host's lock at a time: --limit must select exactly one host${values.limit ? ` ("${values.limit}" selects ${inventory.hosts.map((h) => h.name).join(', ')})` : ''}`,
    )
  const host = inventory.hosts[0]!
  const conn = await connect(host, { sudo: false, echo: false })
  try {
    const result = await breakLock(conn, values.holder)
    log.event({ msg: `unlock: ${result.status}`, host: host.name, holder: result.status === 'not-held' ? undefined : result.holder })
    if (result.status === 'cleared') io.out(`${host.name}: cleared: ${result.holder}\n`)
    else if (result.status === 'not-held') io.out(`${host.name}: not held\n`)
    else {
      io.err(
        `provision: ${host.name} is locked by ${result.holder}, not by holder ${values.holder}: nothing was killed. Check the id in the lock message.\n`,
      )
      return EXIT.hostFailed
    }
  } finally {
    await conn.close()
    log.close()
  }
  return EXIT.ok
}
