import { defineFact, type FactBatch } from './fact.js'
import { sh } from '../core/shell.js'

export interface FileState {
  exists: boolean
  type?: 'file' | 'directory' | 'symlink' | 'other'
  owner?: string
  group?: string
  mode?: number
  sha256?: string
  linkTarget?: string
}

/** stat without following symlinks, then the content hash for regular files. */
export function parseFileState(out: string, code: number): FileState {
  if (code !== 0 || !out.trim()) return { exists: false }
  const [statLine, second] = out.split('\n')
  const [kind, owner, group, mode] = statLine!.split('|')
  const type =
    kind === 'regular file' || kind === 'regular empty file'
      ? 'file'
      : kind === 'directory'
        ? 'directory'
        : kind === 'symbolic link'
          ? 'symlink'
          : 'other'
  const state: FileState = { exists: true, type, owner, group, mode: parseInt(mode ?? '0', 8) }
  if (type === 'file') state.sha256 = second?.split(' ')[0]
  if (type === 'symlink') state.linkTarget = second ?? ''
  return state
}

const SPLIT = '@@MP-SPLIT'

/**
 * All file states of a probe in two processes instead of four per file: one `stat` (the name last, after the
 * fields), the targets of symlinks (a readlink each), and one `sha256sum` of the regular files, whose list the
 * shell keeps in its arguments (no pipe to xargs).
 */
export const FILE_STATE_BATCH_SCRIPT = sh`stat -c '%F|%U|%G|%a|%n' -- "$@"; echo ${SPLIT}; for p; do [ -h "$p" ] && printf '%s\\n' "$p" && readlink -- "$p"; done; echo ${SPLIT}; for p; do shift; [ -f "$p" ] && [ ! -h "$p" ] && set -- "$@" "$p"; done; [ $# -eq 0 ] || sha256sum -- "$@"; true`

export const fileStateBatch: FactBatch = {
  id: 'file-state',
  command: (paths) => sh`set -- ${paths}; ${FILE_STATE_BATCH_SCRIPT}`,
  split(stdout, _code, paths) {
    const [stats = '', links = '', sums = ''] = stdout.split(`${SPLIT}\n`)
    const statOf = new Map<string, string>()
    for (const line of stats.split('\n')) {
      const fields = line.split('|')
      if (fields.length >= 5) statOf.set(fields.slice(4).join('|'), fields.slice(0, 4).join('|'))
    }
    const second = new Map<string, string>()
    // sha256sum prints "<64 hex>  <name>"
    for (const line of sums.split('\n')) if (line.length > 66) second.set(line.slice(66), line)
    const linkLines = links.split('\n')
    for (let i = 0; i + 1 < linkLines.length; i += 2) second.set(linkLines[i]!, linkLines[i + 1]!)
    return paths.map((p) => {
      const stat = statOf.get(p)
      return stat === undefined ? { stdout: '', code: 1 } : { stdout: `${stat}\n${second.get(p) ?? ''}\n`, code: 0 }
    })
  },
}

// Names sha256sum would escape, or that break the line-based split, are probed alone.
const batchable = (path: string) => !/[\n\r\\]/.test(path)

/**
 * A small text file's lines, printed by the shell's own `read` (no process, where `cat` is one); exit code 2 (the
 * redirection's) when it cannot be read.
 */
export const readTextFile = (path: string) => sh`while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done <${path}`

export const fileState = (path: string) => {
  return defineFact(
    `file:${path}`,
    sh`s=$(stat -c '%F|%U|%G|%a' ${path}) || exit 1; echo "$s"; case "$s" in 'regular'*) sha256sum ${path};; 'symbolic link'*) readlink ${path};; esac`,
    parseFileState,
    // Its output is a SHA-256 of the file, and an unsalted digest of a file holding a chosen password can
    // be guessed offline: a probe with file states is never echoed (--verbose), whichever files it reads.
    { sensitive: true, quick: true, paths: [path], ...(batchable(path) ? { batch: { with: fileStateBatch, item: path } } : {}) },
  )
}
