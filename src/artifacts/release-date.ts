type ReleaseFiles = Record<string, { upload_time_iso_8601?: string; requires_python?: string | null }[]>

/** When a Synapse release was published (the last upload of its files) and the Python it requires, from PyPI's JSON API. */
export async function synapseRelease(
  version: string,
  jsonUrl = 'https://pypi.org/pypi/matrix-synapse/json',
): Promise<{ time: Date; requiresPython: string | undefined }> {
  const response = await fetch(jsonUrl, { signal: AbortSignal.timeout(60_000) })
  if (!response.ok) throw new Error(`PyPI answered HTTP ${response.status} for ${jsonUrl}`)
  const body = (await response.json()) as { releases?: ReleaseFiles }
  const releases = body.releases ?? {}
  return {
    time: releaseTimeFrom(releases, version),
    requiresPython: (releases[version] ?? []).map((f) => f.requires_python).find((r) => typeof r === 'string' && r !== '') ?? undefined,
  }
}

/** When a Synapse release was published: the last upload of its files to PyPI (JSON API). */
export async function synapseReleaseTime(version: string, jsonUrl?: string): Promise<Date> {
  return (await synapseRelease(version, jsonUrl)).time
}

/** Pure part: the latest upload time of the version's files; a version PyPI does not have is an error naming its neighbours. */
export function releaseTimeFrom(releases: Record<string, { upload_time_iso_8601?: string }[]>, version: string): Date {
  const times = (releases[version] ?? [])
    .map((f) => f.upload_time_iso_8601)
    .filter((t): t is string => typeof t === 'string')
    .sort()
  const last = times.at(-1)
  if (!last) {
    const known = Object.keys(releases).filter((v) => (releases[v] ?? []).length > 0 && /^\d+\.\d+\.\d+$/.test(v))
    const near = known.filter((v) => v.split('.')[1] === version.split('.')[1])
    throw new Error(`matrix-synapse ${version} is not on PyPI${near.length ? ` (releases of that minor: ${near.join(', ')})` : ''}`)
  }
  return new Date(last)
}
