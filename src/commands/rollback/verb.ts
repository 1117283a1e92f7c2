/** `provision rollback`: the CLI's side (index.ts is the rollback itself). */
import { maskSecrets } from '../../core/secret.js'
import { renderRollback } from '../../report/text.js'
import { openRun } from '../run-context.js'
import { EXIT, UsageError, type Verb } from '../verb.js'
import { rollbackHost } from './index.js'

export const run: Verb = async (input) => {
  const { values, io } = input
  const { loaded, inventory, log, connect } = await openRun(input)
  if (!values.limit) throw new UsageError('rollback needs --limit HOST: roll back one host at a time, knowingly')
  let failed = 0
  const reports = []
  for (const host of inventory.hosts) {
    const conn = await connect(host, { echo: false })
    try {
      // A host that cannot even be read (a probe failed) is a failed host with its reason, not the end of the run.
      const r = await rollbackHost(host, loaded, conn, {
        restoreDump: values['restore-dump'] === true,
        dryRun: values['dry-run'] === true,
      }).catch((error: unknown) => ({
        host: host.name,
        ok: false,
        message: `NOT rolled back: ${maskSecrets(error instanceof Error ? error.message : String(error))}`,
      }))
      if (!r.ok) failed++
      reports.push(r)
      if (!values.json) io.out(renderRollback(r, { color: process.stdout.isTTY === true && !process.env.NO_COLOR }))
    } finally {
      await conn.close()
    }
  }
  if (values.json) io.out(maskSecrets(JSON.stringify(reports, null, 2)) + '\n')
  log.close()
  return failed ? EXIT.hostFailed : EXIT.ok
}
