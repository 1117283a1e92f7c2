/**
 * The downtime a user sees while something runs (an upgrade, a move): a logged-in client calls whoami through
 * Apache every 100 ms and records each window in which the call failed.
 */
import type { MatrixClient } from './matrix-client.js'

export interface Outage {
  from: number
  /** Unset: the call was still failing when the watch stopped. */
  to?: number
}

export interface DowntimeWatch {
  /** Polls `settleMs` longer (the last restart's answer), stops, and returns the windows. */
  stop(settleMs?: number): Promise<Outage[]>
}

export function watchDowntime(client: MatrixClient, intervalMs = 100): DowntimeWatch {
  let polling = true
  const outages: Outage[] = []
  const poller = (async () => {
    while (polling) {
      const t = Date.now()
      const ok = await client.call('GET', '/_matrix/client/v3/account/whoami').then(
        (r) => r.status === 200,
        () => false,
      )
      const open = outages.at(-1)
      if (!ok && (!open || open.to !== undefined)) outages.push({ from: t })
      if (ok && open && open.to === undefined) open.to = t
      await new Promise((res) => setTimeout(res, Math.max(0, intervalMs - (Date.now() - t))))
    }
  })()
  return {
    async stop(settleMs = 1000) {
      await new Promise((res) => setTimeout(res, settleMs))
      polling = false
      await poller
      return outages
    },
  }
}
