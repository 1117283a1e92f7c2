/** Settings of running the server: metrics, Prometheus with its alerts, scheduled backups. */
import { z } from 'zod'
import { bool, hostPath, integer, pattern, port } from '../values.js'

const PROM_DURATION = /^[1-9]\d{0,5}(ms|s|m|h|d|w|y)$/
const promDuration = (example: string) =>
  pattern(PROM_DURATION, `expected a Prometheus duration such as "${example}" (a whole number and one of ms, s, m, h, d, w, y)`)

const prometheusSchema = z
  .strictObject({
    enabled: bool()
      .default(false)
      .describe('Install Prometheus and the node exporter from the distribution on the Synapse host; it scrapes main and every worker'),
    port: port().default(9090).describe('Prometheus listens on 127.0.0.1:<port>; reach it with an SSH tunnel'),
    nodeExporterPort: port().default(9100).describe('The node exporter listens on 127.0.0.1:<port>'),
    retention: promDuration('15d').default('15d').describe('How long samples are kept (--storage.tsdb.retention.time)'),
    retentionSize: pattern(/^[1-9]\d{0,5}(KB|MB|GB|TB)$/, 'expected a size such as "5GB" (a whole number and KB, MB, GB or TB)')
      .optional()
      .describe('Upper bound of the sample store (--storage.tsdb.retention.size); unset: time only'),
    scrapeInterval: promDuration('15s').default('15s').describe('How often every process is scraped and the alert rules evaluated'),
    processDownFor: promDuration('1m')
      .default('1m')
      .describe('How long a Synapse process must be unreachable before SynapseProcessDown fires'),
  })
  .describe(
    "Prometheus on the homeserver with alerts for the guide's indicators (process CPU, event send time, cache evictions, a process down)",
  )

export const backupSchema = z
  .strictObject({
    directory: hostPath().default('/var/backups/matrix-provision').describe('Where the host keeps its scheduled backups'),
    keep: integer(1, 365, 'expected how many backups to keep: an integer between 1 and 365').default(7).describe('Backups kept'),
    onCalendar: pattern(/^[A-Za-z0-9 *:.,~/-]{1,64}$/, 'expected a systemd OnCalendar expression such as daily or "*-*-* 03:30:00"')
      .default('daily')
      .describe('When the timer fires, as systemd.time(7) OnCalendar'),
    minFreeMiB: integer(0, 10_000_000, 'expected a number of MiB (an integer >= 0)')
      .default(1024)
      .describe('Free space that must remain after a backup'),
  })
  .describe('Scheduled backups on the host (role backup)')

export const monitoringSchema = z.strictObject({
  enableMetrics: bool().default(true),
  mainMetricsPort: port().default(32982),
  prometheusScrapeFile: hostPath().optional().describe('Write a Prometheus scrape configuration here on the host (none when unset)'),
  prometheus: prometheusSchema.prefault({}),
})
