/**
 * A release tarball in the host's cache (Element, MAS): used only when it verifies (a download cut short,
 * or a release replaced upstream, would otherwise fail every later run), else fetched again and verified,
 * loudly. The caller unpacks it aside and renames the release into place whole.
 */
import { joinShell, sh, type ShellCommand } from '../../src/core/shell.js'

export interface TarballCheck {
  /** Exits 0 when the tarball passes (sha256sum -c, gpg --verify). */
  test: ShellCommand
  /** The line printed when it does not. */
  failure: string
}

/** A download to a .part name, renamed when whole: a cut download never stands at `path`. */
export const fetchTo = (url: string, path: string, maxTimeS: number) =>
  sh`rm -f ${`${path}.part`}; curl -fsSL --max-time ${maxTimeS} ${url} -o ${`${path}.part`}; mv -f ${`${path}.part`} ${path}`

/**
 * The cached tarball when every check passes; else the downloads (none when the tarball is an uploaded file)
 * and every check again, each failing with its line. Runs under `set -e`.
 */
export function verifiedTarball(tarball: string, checks: readonly TarballCheck[], fetch: readonly ShellCommand[]): ShellCommand {
  const cachedIsGood = joinShell([sh`[ -s ${tarball} ]`, ...checks.map((c) => sh`{ ${c.test}; } >/dev/null 2>&1`)], ' && ')
  const loud = checks.map((c) => sh`${c.test} || { echo ${c.failure} >&2; exit 1; }`)
  return sh`if ${cachedIsGood}; then :; else ${joinShell([...fetch, ...loud], '; ')}; fi`
}
