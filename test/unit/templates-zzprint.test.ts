import { it } from 'vitest'
import { renderSynapseConfig, renderLogConfig } from '../../tasks/synapse/templates.js'
import { renderWorkerFiles, renderWorkerUnit } from '../../tasks/workers/templates.js'
import { renderMatrixVhost, renderServerNameVhost, renderElementVhost, renderPortsConf } from '../../tasks/apache/templates.js'
import { renderPrometheusScrape } from '../../tasks/monitoring/templates.js'
import { renderRedisConf } from '../../tasks/redis/templates.js'
import { renderPgHba, renderPostgresListen } from '../../tasks/postgres/templates.js'
import { renderElementConfig } from '../../tasks/element/templates.js'
import { matrixSettings, synapseContext } from './fixtures/matrix-settings.js'
it('print', async () => {
  const v = matrixSettings({ apache: { tls: { mode: 'acme' } } })
  const out: string[] = []
  for (const f of [...renderSynapseConfig(v, synapseContext()), renderLogConfig('homeserver'), ...renderWorkerFiles(v)]) out.push(`==== ${f.path} ${f.mode.toString(8)} ${f.sensitive}\n${f.content}`)
  out.push(renderWorkerUnit())
  out.push(renderMatrixVhost(v, { certFile: '/etc/ssl/c.pem', keyFile: '/etc/ssl/k.pem', workers: true }).content)
  for (const f of renderServerNameVhost(v, { certFile: '/etc/ssl/c.pem', keyFile: '/etc/ssl/k.pem', workers: true })) out.push(`==== ${f.path}\n${f.content}`)
  out.push(renderElementVhost(v, { certFile: '/etc/ssl/c.pem', keyFile: '/etc/ssl/k.pem' }).content)
  out.push(renderPortsConf(matrixSettings({ apache: { delegation: 'port-8448' } })).content)
  out.push(renderServerNameVhost(matrixSettings({ apache: { delegation: 'port-8448' } }), { certFile: '/etc/ssl/c.pem', keyFile: '/etc/ssl/k.pem', workers: true })[0]!.content)
  out.push(renderPrometheusScrape(v))
  out.push(renderRedisConf(v, ['127.0.0.1', '10.0.0.2'], 'p"w\\d\nü'))
  out.push(renderPostgresListen(['localhost', '10.0.0.2'], 5432))
  out.push(renderPgHba([{ database: 'synapse', user: 'synapse_user', address: '10.0.0.3', method: 'scram-sha-256' }, { database: 'synapse', user: 'synapse_user', address: '::1', method: 'scram-sha-256' }]))
  out.push(renderElementConfig(v))
  ;(await import('node:fs')).writeFileSync('/tmp/rendered.txt', out.join('\n'))
})
