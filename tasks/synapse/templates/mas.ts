import type { MatrixSettings } from '../../../src/inventory/types.js'
import { SYNAPSE_CONF_D, SYNAPSE_GROUP } from '../../../src/synapse/paths.js'
import type { RenderedFile } from '../../common/rendered-file.js'
import { FILE_HEADER, renderYaml } from './yaml.js'

/**
 * conf.d/60-mas.yaml: logins, registration and tokens handed to MAS on its loopback port with the shared
 * secret (Synapse >= 1.136; older releases ignore the key). Explicitly off without MAS, so that turning
 * it off converges. Sensitive (0640) either way: the file is the same one.
 */
export function renderSynapseMasConfig(vars: MatrixSettings, secret: string | undefined): RenderedFile {
  if (vars.mas.enabled && !secret) throw new Error('mas.synapseSecret is empty: Synapse and MAS need the shared secret')
  const body = vars.mas.enabled
    ? { matrix_authentication_service: { enabled: true, endpoint: `http://127.0.0.1:${vars.mas.port}/`, secret } }
    : { matrix_authentication_service: { enabled: false } }
  const content = FILE_HEADER + '# The Matrix Authentication Service (role mas): logins, registration, tokens.\n' + renderYaml(body)
  return { path: `${SYNAPSE_CONF_D}/60-mas.yaml`, content, mode: 0o640, owner: 'root', group: SYNAPSE_GROUP, sensitive: true }
}
