/** When a Synapse release was published: the last upload of its files to PyPI (JSON API). */
export async function synapseReleaseTime(version: string, jsonUrl = 'https://pypi.org/pypi/matrix-synapse/json'): Promise<Date> {
  const response = await fetch(jsonUrl, { signal: AbortSignal.timeout(60_000) })
  if (!response.ok) throw new Error(`PyPI answered HTTP ${response.status} for ${jsonUrl}`)
  const body = (await response.json()) as { releases?: Record<string, { upload_time_iso_8601?: string }[]> }
  return releaseTimeFrom(body.releases ?? {}, version)
}

/** Pure part: the latest upload time of the version's files; a version PyPI does not have is an error naming its neighbours. */
export function releaseTimeFrom(releases: Record<string, { upload_time_iso_8601?: string }[]>, version: string): Date {
  const times = (releases[version] ?? []).map((f) => f.upload_time_iso_8601).filter((t): t is string => typeof t === 'string').sort()
  const last = times.at(-1)
  if (!last) {
    const known = Object.keys(releases).filter((v) => (releases[v] ?? []).length > 0 && /^\d+\.\d+\.\d+$/.test(v))
    const near = known.filter((v) => v.split('.')[1] === version.split('.')[1])
    throw new Error(`matrix-synapse ${version} is not on PyPI${near.length ? ` (releases of that minor: ${near.join(', ')})` : ''}`)
  }
  return new Date(last)
}
