import { defineFact } from './fact.js'
import { shellQuote } from '../ssh/quote.js'

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
  const type = kind === 'regular file' || kind === 'regular empty file' ? 'file' : kind === 'directory' ? 'directory' : kind === 'symbolic link' ? 'symlink' : 'other'
  const state: FileState = { exists: true, type, owner, group, mode: parseInt(mode ?? '0', 8) }
  if (type === 'file') state.sha256 = second?.split(' ')[0]
  if (type === 'symlink') state.linkTarget = second ?? ''
  return state
}

export const fileState = (path: string) => {
  const q = shellQuote(path)
  return defineFact(
    `file:${path}`,
    `s=$(stat -c '%F|%U|%G|%a' ${q}) || exit 1; echo "$s"; case "$s" in 'regular'*) sha256sum ${q};; 'symbolic link'*) readlink ${q};; esac`,
    parseFileState,
  )
}
