import { raw, sh } from '../core/shell.js'
import { defineFact } from './fact.js'
import { readTextFile } from './files.js'

export interface OsRelease {
  id: string
  versionId: string
  codename: string
  prettyName: string
}

export function parseOsRelease(text: string): OsRelease {
  const kv = new Map<string, string>()
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim())
    if (m) kv.set(m[1]!, m[2]!.replace(/^"(.*)"$/, '$1'))
  }
  return {
    id: kv.get('ID') ?? 'unknown',
    versionId: kv.get('VERSION_ID') ?? '',
    codename: kv.get('VERSION_CODENAME') ?? kv.get('UBUNTU_CODENAME') ?? '',
    prettyName: kv.get('PRETTY_NAME') ?? kv.get('ID') ?? 'unknown',
  }
}

export const osRelease = defineFact('os-release', readTextFile('/etc/os-release'), parseOsRelease, { quick: true })

/** MemTotal in MiB (the shell's own `read`: MemTotal is the first line, no process needed). */
export const memoryMiB = defineFact(
  'memory',
  raw`while read -r k v _; do [ "$k" = MemTotal: ] && { echo "$v"; break; }; done </proc/meminfo`,
  (out) => Math.floor(Number(out.trim()) / 1024),
  { quick: true },
)

/** `stat -f -c '%a %S'`: blocks available to unprivileged users (df's "Available") and the block size, in MiB. */
export function parseFreeMiB(out: string): number {
  const [blocks, size] = out.trim().split(/\s+/).map(Number)
  return Math.floor((blocks! * size!) / 1048576)
}

/** Free space in MiB on the file system holding a path (statfs through `stat -f`: df reads every mount first). */
export const freeDiskMiB = (path: string) =>
  defineFact(`free-disk:${path}`, sh`stat -f -c '%a %S' -- ${path}`, parseFreeMiB, { quick: true })

export interface ListeningSocket {
  address: string
  port: number
  /** Process name; empty when ss cannot see it (sandboxed units hide it, e.g. ProtectProc). */
  process: string
  /** Owner of the socket (ss -e uid), which stays visible when the process does not. */
  user: string
}

/** `ss -Htlnpe` lines (State Recv-Q Send-Q Local:Port Peer:Port [Process] uid:N ...), then `---` and name:uid pairs. */
export function parseListening(text: string): ListeningSocket[] {
  const [socketsPart, passwdPart = ''] = text.split('\n---\n')
  const users = new Map(
    passwdPart
      .split('\n')
      .map((l) => l.split(':'))
      .filter((p) => p.length === 2)
      .map(([name, uid]) => [uid!, name!]),
  )
  const out: ListeningSocket[] = []
  for (const line of socketsPart!.split('\n')) {
    const cols = line.trim().split(/\s+/)
    if (cols.length < 5) continue
    const local = cols[3]!
    const idx = local.lastIndexOf(':')
    const proc = /users:\(\("([^"]+)"/.exec(line)?.[1] ?? ''
    const uid = /\buid:(\d+)/.exec(line)?.[1]
    out.push({
      address: local.slice(0, idx).replace(/^\[|\]$/g, ''),
      port: Number(local.slice(idx + 1)),
      process: proc,
      user: uid === undefined ? 'root' : (users.get(uid) ?? uid),
    })
  }
  return out
}

export const listeningTcp = defineFact('listening-tcp', raw`ss -Htlnpe; echo ---; getent passwd | cut -d: -f1,3`, parseListening, {
  quick: true,
})

/** Python 3 version as "3.11", or null when there is none. */
export const pythonVersion = defineFact(
  'python3-version',
  raw`python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'`,
  (out, code) => (code === 0 ? out.trim() : null),
)

/** Whether apt has package lists (a glob, not `ls | grep`: no process). */
export const aptListsPresent = defineFact(
  'apt-lists',
  raw`for f in /var/lib/apt/lists/*_Packages*; do [ -e "$f" ] && echo 1; break; done`,
  (out) => Number(out.trim() || 0) > 0,
  { paths: ['/var/lib/apt/lists/'], quick: true },
)
