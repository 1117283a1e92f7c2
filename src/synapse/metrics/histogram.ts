import type { Sample } from './exposition.js'

/** Cumulative bucket counts of one histogram (summed over the series given), by upper bound `le`. */
export type Buckets = Map<number, number>

export function bucketsOf(samples: Sample[]): Buckets {
  const out: Buckets = new Map()
  for (const s of samples) {
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le)
    if (Number.isNaN(le)) continue
    out.set(le, (out.get(le) ?? 0) + s.value)
  }
  return out
}

/** after - before, bucket by bucket: the observations made in between (a restart in between resets: then `after`). */
export function bucketsDelta(before: Buckets, after: Buckets): Buckets {
  const total = (b: Buckets) => b.get(Infinity) ?? 0
  if (total(after) < total(before)) return after
  const out: Buckets = new Map()
  for (const [le, n] of after) out.set(le, n - (before.get(le) ?? 0))
  return out
}

export function observations(b: Buckets): number {
  return b.get(Infinity) ?? 0
}

/**
 * The q-quantile as Prometheus's histogram_quantile computes it: linear interpolation inside the
 * bucket the rank falls into; the lowest bucket starts at 0; a rank in the +Inf bucket gives the
 * highest finite bound. Undefined without observations.
 */
export function quantile(q: number, b: Buckets): number | undefined {
  const bounds = [...b.keys()].sort((x, y) => x - y)
  const total = observations(b)
  if (!total || bounds.at(-1) !== Infinity) return undefined
  const rank = q * total
  let prevBound = 0
  let prevCount = 0
  for (const le of bounds) {
    const count = b.get(le)!
    if (count >= rank) {
      if (le === Infinity) return prevBound
      if (count === prevCount) return le
      return prevBound + (le - prevBound) * ((rank - prevCount) / (count - prevCount))
    }
    prevBound = le
    prevCount = count
  }
  return prevBound
}
