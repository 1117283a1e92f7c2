/** `provision lock`: the CLI's side (index.ts resolves the lock files). */
import { loadInventory } from '../../inventory/load.js'
import { SYNAPSE_VERSION } from '../../inventory/values.js'
import { EXIT, UsageError, type Verb } from '../verb.js'
import { lockCommand, LockUsageError } from './index.js'

export const run: Verb = async ({ values, io }) => {
  const version = values['synapse-version']
  if (version !== undefined && !SYNAPSE_VERSION.test(version))
    throw new UsageError(`--synapse-version: expected a Synapse version x.y.z such as 1.163.2, got "${version}"`)
  if (values.python !== undefined && !/^3\.\d+(\.\d+)?$/.test(values.python))
    throw new UsageError(`--python: expected a Python version such as 3.11 or 3.9.2, got "${values.python}"`)
  if (values.python !== undefined && !values.wheelhouse) throw new UsageError('--python only makes sense with --wheelhouse DIR')
  const inventory = await loadInventory(values.inventory!, io.env, { locks: false })
  try {
    await lockCommand({
      inventory,
      synapseVersion: version,
      wheelhouse: values.wheelhouse,
      python: values.python,
      env: io.env,
      out: (line) => io.out(line + '\n'),
    })
  } catch (error) {
    if (error instanceof LockUsageError) throw new UsageError(error.message)
    throw error
  }
  return EXIT.ok
}
