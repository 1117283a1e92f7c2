import { posix } from 'node:path'
import { joinShell, raw, sh, type ShellCommand } from '../core/shell.js'

/**
 * How commands get root on a host: the login user is root, or sudo without a password, or sudo
 * with a password that travels on stdin (`sudo -S`), never on the command line.
 */
export type Privilege = 'root' | 'sudo' | 'sudo-password'

/** First line on stderr of a timed root command: its pid (see remoteCommand). */
export const PID_MARKER = 'MP-PID '

/** Extra seconds the host-side `timeout` waits beyond the client's deadline (it is only a backstop). */
const REMOTE_TIMEOUT_GRACE_S = 5

/**
 * The string sent on the SSH channel for a command. The command always runs under `sh -c` (the
 * login shell might be anything); with a deadline, coreutils `timeout` runs as root around it so
 * the whole process group dies even when the client cannot signal it (sudo'd processes belong to
 * root, not to the login user). `-k` on sudo-password: ignore cached credentials, so sudo always
 * reads the password line and the rest of stdin reaches the command untouched.
 */
export function remoteCommand(command: string, privilege: Privilege, timeoutMs?: number): string {
  let inner = sh`sh -c ${command}`
  const timed = timeoutMs !== undefined && timeoutMs > 0
  if (timed) inner = sh`timeout -k 10 ${Math.ceil(timeoutMs / 1000) + REMOTE_TIMEOUT_GRACE_S} ${inner}`
  switch (privilege) {
    case 'root':
      // sshd refuses "signal" requests on root sessions (no privilege separation there), so a timed
      // command first reports its pid on stderr (stripped by the client) to be killed by `kill`.
      return timed ? sh`exec sh -c ${sh`printf ${`${PID_MARKER}%s\n`} $$ >&2; exec ${inner}`.text}`.text : sh`exec ${inner}`.text
    case 'sudo':
      return sh`exec sudo -n -H -- ${inner}`.text
    case 'sudo-password':
      return sh`exec sudo -k -S -p '' -H -- ${inner}`.text
  }
}

export function octalMode(mode: number): string {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new Error(`invalid file mode ${mode}`)
  return mode.toString(8).padStart(4, '0')
}

function checkName(kind: string, name: string): void {
  // User and group names as useradd(8) accepts them; anything else is a mistake, not a name.
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(name)) throw new Error(`invalid ${kind} name ${JSON.stringify(name)}`)
}

function checkPath(path: string): void {
  if (!path.startsWith('/')) throw new Error(`remote path must be absolute: ${JSON.stringify(path)}`)
  if (path.includes('\0') || path.includes('\n')) throw new Error(`remote path contains a NUL or newline: ${JSON.stringify(path)}`)
}

export interface AtomicWrite {
  path: string
  owner: string
  group: string
  mode: number
  /** Bytes that will arrive on stdin; a short read (connection cut) aborts instead of installing half a file. */
  size: number
}

/**
 * One shell script that installs stdin as a file atomically: a 0600 temp file in the destination's
 * directory, the whole of stdin into it, its size checked, owner and mode set, then `mv -f` (a
 * rename: readers see the old file or the new one, never half). Any failure removes the temp file.
 * The parent directory must exist: creating it is a decision for the caller, not a side effect.
 */
export function atomicWriteScript(write: AtomicWrite, stdin: 'whole' | 'next bytes' = 'whole'): ShellCommand {
  checkPath(write.path)
  checkName('owner', write.owner)
  checkName('group', write.group)
  const dir = posix.dirname(write.path)
  const base = posix.basename(write.path)
  if (base === '' || base === '.' || base === '..' || write.path.endsWith('/')) throw new Error(`not a file path: ${write.path}`)
  return joinShell(
    [
      sh`set -eu`,
      sh`dest=${write.path}`,
      sh`dir=${dir}`,
      raw`if [ ! -d "$dir" ]; then echo "matrix-provision: cannot write $dest: directory $dir does not exist" >&2; exit 2; fi`,
      raw`if [ -d "$dest" ]; then echo "matrix-provision: cannot write $dest: it is a directory" >&2; exit 2; fi`,
      sh`umask 077`,
      sh`tmp=$(mktemp "$dir/".${base}.mp-XXXXXX)`,
      raw`trap 'rm -f "$tmp"' EXIT`,
      raw`trap 'exit 129' HUP`,
      raw`trap 'exit 130' INT`,
      raw`trap 'exit 143' TERM`,
      // Several files on one stdin: GNU head -c reads no byte past the count, so the next file starts right after.
      stdin === 'whole' ? raw`cat > "$tmp"` : sh`head -c ${write.size} > "$tmp"`,
      raw`got=$(($(wc -c < "$tmp")))`,
      sh`if [ "$got" -ne ${write.size} ]; then echo "matrix-provision: received $got of "${write.size}" bytes for $dest (connection cut?); nothing changed" >&2; exit 3; fi`,
      sh`chown ${`${write.owner}:${write.group}`} "$tmp"`,
      sh`chmod ${octalMode(write.mode)} "$tmp"`,
      raw`mv -f "$tmp" "$dest"`,
      raw`trap - EXIT`,
    ],
    '\n',
  )
}

/**
 * Several atomic writes in one script, their contents one after another on stdin. Each runs in its own
 * subshell; the first failure stops the rest (a later file would otherwise read an earlier one's bytes).
 */
export function atomicWritesScript(writes: readonly AtomicWrite[]): ShellCommand {
  return joinShell(
    writes.map((w) => sh`(\n${atomicWriteScript(w, 'next bytes')}\n)`),
    ' && ',
  )
}

export interface TarExtract {
  dir: string
  owner: string
  group: string
  /** Mode of `dir` when it has to be created. */
  dirMode: number
}

/**
 * Extract a tar stream from stdin into a directory as root. Owners come from the archive's user and
 * group names (GNU tar as root restores them by name); both are checked to exist first, or tar would
 * silently fall back to uid 0. `dir` is created when missing; its parent must exist.
 */
export function extractTarScript(extract: TarExtract): ShellCommand {
  checkPath(extract.dir)
  checkName('owner', extract.owner)
  checkName('group', extract.group)
  const { owner, group } = extract
  return joinShell(
    [
      sh`set -eu`,
      sh`dest=${extract.dir}`,
      sh`parent=${posix.dirname(extract.dir)}`,
      raw`if [ ! -d "$parent" ]; then echo "matrix-provision: cannot unpack into $dest: directory $parent does not exist" >&2; exit 2; fi`,
      sh`if ! id -u ${owner} >/dev/null 2>&1; then echo ${`matrix-provision: no user ${owner} on this host`} >&2; exit 2; fi`,
      sh`if ! getent group ${group} >/dev/null; then echo ${`matrix-provision: no group ${group} on this host`} >&2; exit 2; fi`,
      sh`if [ ! -d "$dest" ]; then mkdir -m ${octalMode(extract.dirMode)} "$dest"; chown ${`${owner}:${group}`} "$dest"; fi`,
      raw`tar -x -f - -C "$dest" --same-owner --same-permissions`,
    ],
    '\n',
  )
}
