import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { renderPrometheusScrape } from '../../tasks/monitoring/templates.js'
import { matrixSettings } from './fixtures/matrix-settings.js'

const load = (content: string) => {
  const v12 = parse(content)
  expect(parse(content, { version: '1.1' })).toEqual(v12)
  return v12 as { scrape_configs: any[] }
}

describe('renderPrometheusScrape', () => {
  it('scrapes the main process and each worker on loopback at /_synapse/metrics, labelled for the Grafana dashboard', () => {
    const config = load(renderPrometheusScrape(matrixSettings()))
    expect(config.scrape_configs).toEqual([
      {
        job_name: 'synapse',
        scrape_interval: '15s',
        metrics_path: '/_synapse/metrics',
        static_configs: [
          { targets: ['127.0.0.1:32982'], labels: { instance: 'example.org', job: 'master', index: '1' } },
          { targets: ['127.0.0.1:32981'], labels: { instance: 'example.org', job: 'federation_reader', index: '1' } },
          { targets: ['127.0.0.1:32980'], labels: { instance: 'example.org', job: 'federation_sender', index: '1' } },
        ],
      },
    ])
  })

  it('scrapes only the main process without workers', () => {
    const config = load(renderPrometheusScrape(matrixSettings({ workers: { enabled: false } })))
    expect(config.scrape_configs[0].static_configs.map((s: any) => s.labels.job)).toEqual(['master'])
  })

  it('has nothing to scrape with metrics off', () => {
    expect(load(renderPrometheusScrape(matrixSettings({ monitoring: { enableMetrics: false } })))).toEqual({ scrape_configs: [] })
  })
})
