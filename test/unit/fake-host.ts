/**
 * An in-memory Debian/Ubuntu host behind the `Connection` contract, for plan and apply tests without
 * containers. It answers the fact probe (`sh -s` with framed fact commands) from its state, and
 * emulates the handful of command shapes the resources and the engine run in apply. Anything it
 * does not recognise is an error (recorded in `unexpected` and thrown), so the fake never guesses.
 *
 * State: a file tree (files, directories, symlinks with owner/group/mode), dpkg's package list,
 * systemd units (a unit is loaded when its file exists; runtime state is kept apart), users and
 * groups, Postgres roles and databases, Python virtualenvs, debconf answers, apt lists.
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, posix } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { hostOwnership, pendingRestarts, storedSecrets } from '../../src/engine/host-state.js'
import { synapseFootprint } from '../../src/engine/ownership.js'
import { handBuiltFiles } from '../../src/commands/adopt/host-files.js'
import { FILE_STATE_BATCH_SCRIPT } from '../../src/facts/files.js'
import { debPackages } from '../../src/facts/packages.js'
import { BUFFERED_CLOSE, BUFFERED_OPEN } from '../../src/facts/probe.js'
import { aptListsPresent, listeningTcp, memoryMiB, osRelease, pythonVersion } from '../../src/facts/system.js'
import { maskSecrets, Secret } from '../../src/core/secret.js'
import { VENV_CONTENTS_SCRIPT } from '../../src/synapse/lock/drift.js'
import { entriesFor, parseLock } from '../../src/synapse/lock/lock-file.js'
import { targetEnvironment } from '../../src/synapse/lock/markers.js'
import {
  checked,
  type CommandResult,
  type Connection,
  type FileWrite,
  type RemoteProcess,
  type RunOptions,
} from '../../src/ssh/connection.js'
import type { ShellCommand } from '../../src/core/shell.js'
import type { Distro } from './fixtures/hosts/distros.js'
import { databaseSchemaFact, releaseStateFact } from '../../tasks/synapse/release/facts.js'
import { aptSourceFact, guardedInstall } from '../../tasks/synapse/apt-package.js'
import { raw } from '../../src/core/shell.js'
import { HOST_RECORD, PENDING_RESTARTS, SECRETS_DIR, STATE_DIR } from '../../src/synapse/paths.js'

export type FsNode =
  | { type: 'file'; content: Buffer; owner: string; group: string; mode: number }
  | { type: 'directory'; owner: string; group: string; mode: number }
  | { type: 'symlink'; target: string }

interface UnitRuntime {
  active: boolean
  enabled: boolean
  /** ActiveEnterTimestampMonotonic: changes on every (re)start. */
  since: number
}

interface Socket {
  address: string
  port: number
  /** Empty when the unit hides its processes (ProtectProc=invisible). */
  process: string
  user: string
}

/** What each unit listens on while active, with the inventory's default ports. */
const SOCKETS: Record<string, Socket[]> = {
  'ssh.service': [
    { address: '0.0.0.0', port: 22, process: 'sshd', user: 'root' },
    { address: '::', port: 22, process: 'sshd', user: 'root' },
  ],
  'postgresql.service': [
    { address: '127.0.0.1', port: 5432, process: 'postgres', user: 'postgres' },
    { address: '::1', port: 5432, process: 'postgres', user: 'postgres' },
  ],
  'redis-server.service': [{ address: '127.0.0.1', port: 32992, process: 'redis-server', user: 'redis' }],
  'apache2.service': [
    { address: '*', port: 80, process: 'apache2', user: 'root' },
    { address: '*', port: 443, process: 'apache2', user: 'root' },
  ],
  'matrix-synapse.service': [8008, 32993, 32982].map((port) => ({ address: '127.0.0.1', port, process: '', user: 'matrix-synapse' })),
  'matrix-synapse-worker@federation_reader.service': [32902, 32981].map((port) => ({
    address: '127.0.0.1',
    port,
    process: '',
    user: 'matrix-synapse',
  })),
  'matrix-synapse-worker@federation_sender.service': [{ address: '127.0.0.1', port: 32980, process: '', user: 'matrix-synapse' }],
}

/** Apache directives -> the module that must be enabled for `apache2ctl configtest` to accept them. */
const APACHE_DIRECTIVE_MODULES: Record<string, string> = {
  SSLEngine: 'ssl',
  SSLCertificateFile: 'ssl',
  ProxyPass: 'proxy',
  ProxyPassMatch: 'proxy',
  ProxyPassReverse: 'proxy',
  RequestHeader: 'headers',
  Header: 'headers',
  Alias: 'alias',
  Redirect: 'alias',
  RedirectMatch: 'alias',
}

/** cp -a: a copy with the same metadata (structuredClone would turn a Buffer into a plain Uint8Array). */
const cloneNode = (n: FsNode): FsNode => (n.type === 'file' ? { ...n, content: Buffer.from(n.content) } : { ...n })

/** One shell word, single- or double-quoted or bare (what shellQuote produces, and `"$tmp"`). */
const ARG = String.raw`((?:'[^']*'|"[^"]*"|\\.|[^\s'"\\])+)`
const rx = (source: string) => new RegExp(source)

/** Split a command line into words the way sh does for the quoting shellQuote produces. */
export function shellWords(s: string): string[] {
  const out: string[] = []
  let cur: string | null = null
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!
    if (c === "'" || c === '"') {
      const end = s.indexOf(c, i + 1)
      if (end < 0) throw new Error(`unterminated quote in: ${s}`)
      cur = (cur ?? '') + s.slice(i + 1, end)
      i = end
    } else if (c === '\\') {
      cur = (cur ?? '') + (s[i + 1] ?? '')
      i++
    } else if (/\s/.test(c)) {
      if (cur !== null) out.push(cur)
      cur = null
    } else {
      cur = (cur ?? '') + c
    }
  }
  if (cur !== null) out.push(cur)
  return out
}

const unquote = (token: string) => {
  const words = shellWords(token)
  if (words.length !== 1) throw new Error(`expected one shell word, got ${JSON.stringify(token)}`)
  return words[0]!
}

/** signing_key_path of the package's homeserver.yaml and of ours. */
const SYNAPSE_SIGNING_KEY = '/etc/matrix-synapse/homeserver.signing.key'

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

interface Out {
  stdout?: string
  stderr?: string
  code?: number
}

export class UnexpectedCommand extends Error {}

/** A synchronous body as the contract's promise: a throw rejects, as the real connection's failures do. */
export const settle = <T>(body: () => T): Promise<T> => new Promise((resolve) => resolve(body()))

export class FakeHost implements Connection {
  readonly host: string
  readonly distro: Distro
  readonly fs = new Map<string, FsNode>()
  readonly packages = new Map<string, string>()
  readonly units = new Map<string, UnitRuntime>()
  readonly users = new Map<string, { uid: number; group: string; groups: Set<string> }>()
  readonly groups = new Set<string>(['root', 'nogroup', 'adm'])
  readonly roles = new Map<string, { login: boolean; password: string }>()
  readonly databases = new Map<string, { encoding: string; collate: string; ctype: string; owner: string }>()
  /** virtualenv path -> module -> version */
  /** venv path -> installed distributions (normalized name -> version), as importlib.metadata lists them. */
  readonly venvs = new Map<string, Map<string, string>>()
  /** The interpreter venvs are made with (bookworm's). */
  venvPython = '3.11.2'
  readonly debconf = new Map<string, string>()
  /** Packages on hold (apt-mark hold). */
  readonly held = new Set<string>()
  #policyGuard = false
  /** The source lines apt knew at its last `apt-get update` (null: never updated, no lists). */
  aptLists: string[] | null
  memoryKiB = 4 * 1024 * 1024
  diskKiB = 20 * 1024 * 1024
  /** Read-only mode (dry runs): any command that would change the host is an error. */
  frozen = false
  /** The paths of each writeFiles call (one round trip each on a real host). */
  readonly writeBatches: string[][] = []
  /** Every command run, in order (probe scripts as `sh -s`). */
  readonly commands: string[] = []
  /** Commands and facts the fake did not recognise (each also threw). */
  readonly unexpected: string[] = []
  /** `systemctl restart|reload <unit>` done. */
  readonly restarts: string[] = []
  /** Apache's configuration generation (mod_status), one more per reload or restart. */
  apacheGeneration = 1
  /** Generation probes after a reload still answered by the old children (a graceful reload is asynchronous). */
  apacheReloadLag = 0
  #apacheLagLeft = 0
  /** Unit files and drop-ins written since the last `systemctl daemon-reload`. */
  readonly daemonReloadDue = new Set<string>()
  #clock = 1000
  #nextUid = 100

  constructor(distro: Distro, name = 'matrix1') {
    this.host = name
    this.distro = distro
    for (const dir of [
      '/',
      '/etc',
      '/etc/apt',
      '/etc/apt/sources.list.d',
      '/etc/ssl',
      '/etc/systemd',
      '/etc/systemd/system',
      '/etc/default',
      '/lib',
      '/lib/systemd',
      '/lib/systemd/system',
      '/opt',
      '/run',
      '/usr',
      '/usr/share',
      '/usr/share/keyrings',
      '/var',
      '/var/cache',
      '/var/lib',
      '/var/log',
      '/tmp',
    ]) {
      this.fs.set(dir, { type: 'directory', owner: 'root', group: 'root', mode: dir === '/tmp' ? 0o1777 : 0o755 })
    }
    this.users.set('root', { uid: 0, group: 'root', groups: new Set() })
    this.users.set('nobody', { uid: 65534, group: 'nogroup', groups: new Set() })
    this.addUser('sshd', 'nogroup')
    this.put('/etc/os-release', distro.osRelease)
    this.put('/lib/systemd/system/ssh.service', '[Service]\nExecStart=/usr/sbin/sshd -D\n')
    for (const [name, version] of Object.entries(distro.preinstalled)) this.packages.set(name, version)
    this.units.set('ssh.service', { active: true, enabled: true, since: this.#clock++ })
    this.aptLists = distro.aptListsPresent ? ['(distribution archive)'] : null
  }

  // -- state helpers -------------------------------------------------------------------------------

  file(path: string): Buffer | undefined {
    const n = this.fs.get(this.resolve(path))
    return n?.type === 'file' ? n.content : undefined
  }

  /** The path with a symlinked directory on its way followed (/opt/venvs/matrix-synapse -> matrix-synapse-1.163.2). */
  resolve(path: string): string {
    const parts = path.split('/')
    for (let i = parts.length - 1; i > 1; i--) {
      const dir = parts.slice(0, i).join('/')
      const n = this.fs.get(dir)
      if (n?.type === 'symlink') return this.resolve(posix.resolve(posix.dirname(dir), n.target) + '/' + parts.slice(i).join('/'))
    }
    return path
  }

  text(path: string): string | undefined {
    return this.file(path)?.toString('utf8')
  }

  put(path: string, content: string | Buffer, meta: { owner?: string; group?: string; mode?: number } = {}): void {
    const parent = this.fs.get(posix.dirname(path))
    if (parent?.type !== 'directory') throw new Error(`${posix.dirname(path)}: No such file or directory (writing ${path})`)
    if (!this.users.has(meta.owner ?? 'root')) throw new Error(`chown: invalid user: '${meta.owner}' (writing ${path})`)
    if (!this.groups.has(meta.group ?? 'root')) throw new Error(`chown: invalid group: '${meta.group}' (writing ${path})`)
    this.fs.set(path, {
      type: 'file',
      content: Buffer.isBuffer(content) ? content : Buffer.from(content),
      owner: meta.owner ?? 'root',
      group: meta.group ?? 'root',
      mode: meta.mode ?? 0o644,
    })
    if (path.startsWith('/etc/systemd/system/')) this.daemonReloadDue.add(path)
  }

  mkdirp(path: string, meta: { owner?: string; group?: string; mode?: number } = {}): void {
    const parts = path.split('/').filter(Boolean)
    for (let i = 1; i <= parts.length; i++) {
      const p = '/' + parts.slice(0, i).join('/')
      const node = this.fs.get(p)
      if (node && node.type !== 'directory') throw new Error(`mkdir: ${p} exists and is not a directory`)
      if (!node) this.fs.set(p, { type: 'directory', owner: 'root', group: 'root', mode: 0o755 })
    }
    if (meta.owner || meta.group || meta.mode !== undefined) {
      const node = this.fs.get(path) as Extract<FsNode, { type: 'directory' }>
      if (meta.owner && !this.users.has(meta.owner)) throw new Error(`install: invalid user '${meta.owner}'`)
      if (meta.group && !this.groups.has(meta.group)) throw new Error(`install: invalid group '${meta.group}'`)
      this.fs.set(path, { ...node, owner: meta.owner ?? node.owner, group: meta.group ?? node.group, mode: meta.mode ?? node.mode })
    }
  }

  removeTree(path: string): void {
    for (const p of [...this.fs.keys()]) if (p === path || p.startsWith(path + '/')) this.fs.delete(p)
  }

  addUser(name: string, group: string, options: { ownGroup?: boolean } = {}): void {
    if (this.users.has(name)) return
    if (options.ownGroup) this.groups.add(name)
    if (!this.groups.has(group)) throw new Error(`useradd: group '${group}' does not exist`)
    this.users.set(name, { uid: this.#nextUid++, group, groups: new Set() })
  }

  /** The file a unit name loads from: an own or a package unit, or the template of an instance. */
  unitFile(unit: string): string | undefined {
    const names = [unit, unit.replace(/@[^.]+\./, '@.')]
    for (const dir of ['/etc/systemd/system', '/lib/systemd/system'])
      for (const n of names) if (this.fs.get(`${dir}/${n}`)?.type === 'file') return `${dir}/${n}`
    return undefined
  }

  startUnit(unit: string, enable: boolean): void {
    const rt = this.units.get(unit) ?? { active: false, enabled: false, since: 0 }
    if (!rt.active) {
      this.#execStartPre(unit)
      rt.since = this.#clock++
    }
    rt.active = true
    rt.enabled ||= enable
    this.units.set(unit, rt)
  }

  /**
   * The package's unit runs `--generate-keys` before each start: Synapse creates a missing signing key
   * as the service user, mode 0640 (synapse/config/key.py), and leaves one that exists alone. Our unit
   * (pip method) has no ExecStartPre: the signing-key resource made the key before the first start.
   */
  #execStartPre(unit: string): void {
    // The tool's drop-in empties the package's ExecStartPre.
    if (/^ExecStartPre=$/m.test(this.text('/etc/systemd/system/matrix-synapse.service.d/matrix-provision.conf') ?? '')) return
    if (
      unit !== 'matrix-synapse.service' ||
      !this.packages.has('matrix-synapse-py3') ||
      this.fs.get(SYNAPSE_SIGNING_KEY) ||
      !this.users.has('matrix-synapse')
    )
      return
    this.put(SYNAPSE_SIGNING_KEY, 'ed25519 a_pkg0 generated-at-start\n', {
      owner: 'matrix-synapse',
      group: this.users.get('matrix-synapse')!.group,
      mode: 0o640,
    })
  }

  readableBy(user: string, path: string): boolean {
    const n = this.fs.get(path)
    if (!n || n.type === 'symlink') return false
    const u = this.users.get(user)
    if (!u) return false
    if (n.owner === user) return (n.mode & 0o400) !== 0
    if (n.group === u.group || u.groups.has(n.group)) return (n.mode & 0o040) !== 0
    return (n.mode & 0o004) !== 0
  }

  // -- Connection ----------------------------------------------------------------------------------

  run(built: ShellCommand, options: RunOptions = {}): Promise<CommandResult> {
    return settle(() => {
      const command = built.text
      this.commands.push(command)
      if (options.stdin !== undefined && typeof options.stdin !== 'string' && !Buffer.isBuffer(options.stdin))
        throw new Error('FakeHost: streamed stdin is not modelled')
      const stdin = options.stdin === undefined ? '' : Buffer.isBuffer(options.stdin) ? options.stdin.toString('utf8') : options.stdin
      const out = command === 'sh -s' ? { stdout: this.#probe(stdin) } : this.#exec(command, stdin)
      return checked(
        this.host,
        {
          command: maskSecrets(command),
          code: out.code ?? 0,
          signal: null,
          stdout: out.stdout ?? '',
          stderr: out.stderr ?? '',
          durationMs: 0,
          timedOut: false,
        },
        options,
      )
    })
  }

  writeFile(f: FileWrite): Promise<void> {
    return settle(() => {
      this.#mutating(`writeFile ${f.path}`)
      const content = f.content instanceof Secret ? f.content.reveal() : f.content
      this.put(f.path, content, { owner: f.owner, group: f.group, mode: f.mode ?? (f.content instanceof Secret ? 0o600 : 0o644) })
    })
  }

  async writeFiles(files: readonly FileWrite[]): Promise<void> {
    this.writeBatches.push(files.map((f) => f.path))
    for (const f of files) await this.writeFile(f)
  }

  putFile(localPath: string, remotePath: string, options: { owner?: string; group?: string; mode?: number } = {}): Promise<void> {
    return settle(() => {
      this.#mutating(`putFile ${remotePath}`)
      this.put(remotePath, readFileSync(localPath), options)
    })
  }

  putDirectory(localDir: string, remoteDir: string, options: { owner?: string; group?: string; mode?: number } = {}): Promise<void> {
    return settle(() => {
      this.#mutating(`putDirectory ${remoteDir}`)
      if (this.fs.get(remoteDir)?.type !== 'directory') throw new Error(`tar: ${remoteDir}: Cannot open: No such file or directory`)
      for (const name of readdirSync(localDir)) {
        if (statSync(join(localDir, name)).isFile()) this.put(`${remoteDir}/${name}`, readFileSync(join(localDir, name)), options)
      }
    })
  }

  /**
   * Only the host lock runs this way: it is granted at once; each probe sent on its stdin (a line with the script's
   * length, then the script) is answered as `sh -s`, followed by its numbered end marker.
   */
  spawn(built: ShellCommand, options: { stdin?: string } = {}): RemoteProcess {
    const command = built.text
    this.#mutating(`spawn ${command}`)
    if (!command.includes('flock -n 9')) this.#unexpected(`spawn of an unknown command: ${command}`)
    this.mkdirp(STATE_DIR, { mode: 0o700 })
    let stdout = 'MP-LOCKED\n'
    let pending = ''
    let probes = 0
    const write = (data: string) => {
      if (!command.includes('@@MP-PROBED')) this.#unexpected(`stdin for a lock that runs no probes: ${command}`)
      pending += data
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        const length = Number(pending.slice(0, nl))
        const script = Buffer.from(pending.slice(nl + 1))
        if (script.length < length) break
        pending = script.subarray(length).toString()
        this.commands.push('sh -s')
        stdout += `${this.#probe(script.subarray(0, length).toString())}@@MP-PROBED ${++probes} 0\n`
      }
    }
    if (options.stdin !== undefined) write(options.stdin)
    let end: () => void = () => undefined
    const exited = new Promise<CommandResult>((resolve) => {
      end = () => resolve({ command: 'lock', code: 0, signal: null, stdout, stderr: '', durationMs: 0, timedOut: false })
    })
    return { write, end: () => end(), waitForOutput: () => Promise.resolve(stdout), exited }
  }

  async close(): Promise<void> {}

  #unexpected(what: string): never {
    this.unexpected.push(what)
    throw new UnexpectedCommand(`fake host ${this.host}: ${what}`)
  }

  #mutating(what: string): void {
    if (this.frozen) this.#unexpected(`a dry run tried to change the host: ${what}`)
  }

  // -- the fact probe ------------------------------------------------------------------------------

  /** Split the probe script into its framed fact commands and answer each (see probeScript). */
  #probe(script: string): string {
    const frame = String.raw`printf '%s\\n' '@@MP-FACT (\d+)'; \( (.*) \) <\/dev\/null 2>\/dev\/null; printf '\\n%s %s\\n' '@@MP-END \1' "\$\?"`
    const quick = new RegExp(`^${frame}$`)
    const background = new RegExp(`^\\{ ${frame}; \\} >"\\$mp_probe\\/\\1" &$`)
    if (!script.startsWith(`${BUFFERED_OPEN}\n`) || !script.endsWith(`\n${BUFFERED_CLOSE}`))
      this.#unexpected(`a probe script that does not keep its output to one write: ${script.slice(0, 200)}`)
    let lines = script.slice(BUFFERED_OPEN.length + 1, -BUFFERED_CLOSE.length - 1).split('\n')
    // Commands that are not quick run side by side into a temporary directory, printed after the quick ones.
    if (/^mp_probe=/.test(lines[0]!)) {
      if (!/^mp_probe=\$\(mktemp -d\) \|\| exit 1; trap /.test(lines[0]!) || !/^wait; cd "\$mp_probe" && cat [\d ]+$/.test(lines.at(-1)!))
        this.#unexpected(`a probe script without its frame: ${script.slice(0, 200)}`)
      lines = lines.slice(1, -1)
    }
    const parts: { i: number; text: string }[] = []
    for (const line of lines) {
      const m = quick.exec(line) ?? background.exec(line)
      if (!m) this.#unexpected(`a probe script line that is not a framed fact: ${line}`)
      const r = this.#fact(m[2]!)
      parts.push({ i: Number(m[1]), text: `@@MP-FACT ${m[1]}\n${r.stdout ?? ''}\n@@MP-END ${m[1]} ${r.code ?? 0}\n` })
    }
    return parts
      .sort((a, b) => a.i - b.i)
      .map((p) => p.text)
      .join('')
  }

  #fact(cmd: string): Out {
    let m: RegExpExecArray | null
    if (cmd === osRelease.command.text) return { stdout: this.text('/etc/os-release') }
    if (cmd === memoryMiB.command.text) return { stdout: `${this.memoryKiB}\n` }
    if (rx(String.raw`^stat -f -c '%a %S' -- ${ARG}$`).test(cmd)) return { stdout: `${this.diskKiB} 1024\n` }
    if (cmd === debPackages.command.text)
      return { stdout: [...this.packages].map(([n, v]) => `${n}\t${this.held.has(n) ? 'hi' : 'ii'} \t${v}\n`).join('') }
    if (cmd === pythonVersion.command.text) return this.packages.has('python3') ? { stdout: `${this.distro.python}\n` } : { code: 127 }
    if (cmd === listeningTcp.command.text) return { stdout: this.#ss() }
    if (cmd === pendingRestarts.command.text) return this.#cat(PENDING_RESTARTS)
    if (cmd === storedSecrets.command.text) {
      const lines = [...this.fs]
        .filter(([p, n]) => posix.dirname(p) === SECRETS_DIR && n.type === 'file')
        .sort(([a], [b]) => a.localeCompare(b))
      return { stdout: lines.map(([p, n]) => `${posix.basename(p)}\t${(n as { content: Buffer }).content.toString('base64')}\n`).join('') }
    }
    const ownership = this.#ownershipFacts(cmd)
    if (ownership) return ownership
    if (cmd === aptListsPresent.command.text) return this.#aptListCount()
    if (cmd === aptSourceFact.command.text) return this.#aptSource()
    if (cmd.startsWith(`echo "pkg $(dpkg-query -W -f '\${Version} \${db:Status-Abbrev}' matrix-synapse-py3`)) return this.#aptRunState(cmd)
    if (cmd === releaseStateFact('/var/backups/matrix-synapse').command.text) return this.#releaseState()
    if (cmd === databaseSchemaFact.command.text) return { stdout: 'null\n' } // the fake Postgres holds no Synapse schema
    if ((m = /^if \[ -x (\S+)\/bin\/python \]; then .*base64.*; else echo null; fi$/s.exec(cmd))) {
      const version = this.venvs.get(this.resolve(m[1]!))?.get('matrix-synapse')
      return {
        stdout: version ? JSON.stringify({ version, schemaVersion: 94, compatVersion: 84, deltas: ['94/01_fake.sql'] }) + '\n' : 'null\n',
      }
    }
    if (
      (m = rx(
        String.raw`^s=\$\(stat -c '%F\|%U\|%G\|%a' ${ARG}\) \|\| exit 1; echo "\$s"; case "\$s" in 'regular'\*\) sha256sum \1;; 'symbolic link'\*\) readlink \1;; esac$`,
      ).exec(cmd))
    ) {
      return this.#stat(unquote(m[1]!))
    }
    if (cmd.startsWith('set -- ') && cmd.endsWith(`; ${FILE_STATE_BATCH_SCRIPT.text}`))
      return this.#statBatch(shellWords(cmd.slice('set -- '.length, -FILE_STATE_BATCH_SCRIPT.text.length - 2)))
    if (
      (m = rx(String.raw`^systemctl show -p LoadState,ActiveState,UnitFileState,ActiveEnterTimestampMonotonic ((?:${ARG} ?)+)$`).exec(cmd))
    ) {
      return {
        stdout: shellWords(m[1]!)
          .map((u) => this.#unitShow(u).stdout)
          .join('\n'),
      }
    }
    if ((m = /^runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -F '\t' -c (.+)$/.exec(cmd)))
      return this.#psqlQuery(unquote(m[1]!))
    if ((m = rx(String.raw`^${ARG} -c ${ARG}$`).exec(cmd)) && unquote(m[1]!).endsWith('/bin/python')) {
      if (unquote(m[2]!) !== VENV_CONTENTS_SCRIPT) this.#unexpected(`python probe: ${cmd}`)
      const dists = this.venvs.get(this.resolve(unquote(m[1]!)).replace(/\/bin\/python$/, ''))
      return dists === undefined
        ? { code: 127, stderr: 'No such file or directory' }
        : { stdout: `python ${this.venvPython}\n${[...dists].map(([n, v]) => `${n} ${v}\n`).join('')}` }
    }
    return this.#guard(cmd)
  }

  /** aptSourceFact: the one-source update (the source's packages become known) and madison's rows. */
  #aptSource(): Out {
    const sources = this.text('/etc/apt/sources.list.d/matrix-org.list')
    const pkg = 'matrix-synapse-py3'
    const installed = this.packages.get(pkg)
    const lines: string[] = []
    if (sources !== undefined) {
      lines.push('source')
      this.aptLists = [...new Set([...(this.aptLists ?? []), ...sources.split('\n').filter(Boolean)])]
      const candidate = this.distro.candidates[pkg]
      if (candidate && sources.includes('packages.matrix.org') && sources.includes(` ${this.distro.codename} `))
        lines.push(`madison: ${pkg} | ${candidate} | https://packages.matrix.org/debian ${this.distro.codename}/main amd64 Packages`)
    }
    lines.push(`installed ${installed ? `${installed} ${this.held.has(pkg) ? 'hi' : 'ii'} ` : ''}`)
    return { stdout: lines.join('\n') + '\n' }
  }

  /** aptRunStateFact: the package and, per unit, whether it runs; the fake serves no metrics and keeps no start times, so each runs the package's code. */
  #aptRunState(cmd: string): Out {
    const pkg = 'matrix-synapse-py3'
    const installed = this.packages.get(pkg)
    const units = [...cmd.matchAll(/u=(\S+); a=/g)].map((m) => unquote(m[1]!))
    return {
      stdout:
        [
          `pkg ${installed ? `${installed} ${this.held.has(pkg) ? 'hi' : 'ii'} ` : ''}`,
          'listed ',
          ...units.map((u) => `proc ${u} ${this.units.get(u)?.active ? 'active' : 'inactive'} - `),
        ].join('\n') + '\n',
    }
  }

  /** releaseStateFact: the venv link, the versioned venvs and the active version, as the shell prints them. */
  #releaseState(): Out {
    const link = this.fs.get('/opt/venvs/matrix-synapse')
    const lines: string[] = []
    if (link?.type === 'symlink') lines.push(`link ${link.target}`)
    else if (link?.type === 'directory') lines.push('dir')
    for (const p of [...this.fs.keys()]
      .filter((k) => k.startsWith('/opt/venvs/matrix-synapse-') && !k.slice(1).includes('/', 'opt/venvs/'.length))
      .sort()) {
      if (this.fs.get(p)?.type === 'directory') lines.push(`venv 1 ${p}`)
    }
    const active = this.venvs.get(this.resolve('/opt/venvs/matrix-synapse/bin/python').replace(/\/bin\/python$/, ''))?.get('matrix-synapse')
    if (active) lines.push(`active ${active}`)
    lines.push(`free ${this.diskKiB}`)
    return { stdout: lines.join('\n') + '\n' }
  }

  /** Guards of command resources: `a && b && c`, each clause answered from the state. */
  #guard(cmd: string): Out {
    let m: RegExpExecArray | null
    // The signing key's owner and mode (a missing key is left to the command that makes it).
    if ((m = rx(String.raw`^! test -e ${ARG} \|\| test "\$\(stat -c '%U %a' ${ARG}\)" = 'matrix-synapse 600'$`).exec(cmd))) {
      const n = this.fs.get(unquote(m[1]!))
      return { code: !n || (n.type === 'file' && n.owner === 'matrix-synapse' && n.mode === 0o600) ? 0 : 1 }
    }
    for (const clause of cmd.split(' && ')) {
      if (!this.#clause(clause)) return { code: 1 }
    }
    return { code: 0 }
  }

  #clause(clause: string): boolean {
    let m: RegExpExecArray | null
    if ((m = rx(String.raw`^test -([es]) ${ARG}$`).exec(clause))) {
      const path = unquote(m[2]!)
      return m[1] === 'e' ? this.fs.has(path) : (this.file(path)?.length ?? 0) > 0
    }
    if ((m = rx(String.raw`^id -u ${ARG}$`).exec(clause))) return this.users.has(unquote(m[1]!))
    if ((m = rx(String.raw`^id -nG ${ARG} \| grep -qw ${ARG}$`).exec(clause))) {
      const u = this.users.get(unquote(m[1]!))
      const g = unquote(m[2]!)
      return u !== undefined && (u.group === g || u.groups.has(g))
    }
    if (
      (m = rx(
        String.raw`^gpg --batch --show-keys --with-colons ${ARG} 2>/dev/null \| awk -F: '\$1=="fpr" \{print \$10\}' \| grep -qx ${ARG}$`,
      ).exec(clause))
    ) {
      return this.text(unquote(m[1]!))?.includes(`fpr:${unquote(m[2]!)}`) ?? false
    }
    // Fake certificates never expire; their text lists their names.
    if ((m = rx(String.raw`^openssl x509 -checkend \d+ -noout -in ${ARG}$`).exec(clause))) return this.file(unquote(m[1]!)) !== undefined
    if ((m = rx(String.raw`^openssl x509 -noout -ext subjectAltName -in ${ARG} \| grep -q ${ARG}$`).exec(clause))) {
      return (this.text(unquote(m[1]!)) ?? '').split(/[\s,]+/).includes(unquote(m[2]!))
    }
    if ((m = rx(String.raw`^cmp -s ${ARG} ${ARG}$`).exec(clause))) {
      const [a, b] = [this.text(unquote(m[1]!)), this.text(unquote(m[2]!))]
      return a !== undefined && a === b
    }
    // retiredWorkers' guard: no worker file outside the set.
    if ((m = /^test -z "\$\(for f in (\S+)\/\*\.yaml; .* case " "(\S+|'[^']*')" " in .*\)"$/.exec(clause)))
      return this.#retiredWorkers(m[1]!, unquote(m[2]!)).length === 0
    this.#unexpected(`a fact command or guard clause the fake does not know: ${clause}`)
  }

  /** Worker names whose file is in `dir` but not in the space-separated `keep`. */
  #retiredWorkers(dir: string, keep: string): string[] {
    const names = keep.split(' ')
    return [...this.fs.keys()]
      .filter((p) => posix.dirname(p) === dir && p.endsWith('.yaml'))
      .map((p) => posix.basename(p, '.yaml'))
      .filter((n) => !names.includes(n))
  }

  #cat(path: string): Out {
    const n = this.fs.get(path)
    const target = n?.type === 'symlink' ? this.fs.get(posix.resolve(posix.dirname(path), n.target)) : n
    if (target?.type !== 'file') return { code: 1, stderr: `cat: ${path}: No such file or directory` }
    return { stdout: target.content.toString('utf8') }
  }

  #stat(path: string): Out {
    const n = this.fs.get(path)
    if (!n) return { code: 1 }
    if (n.type === 'symlink') return { stdout: `symbolic link|root|root|777\n${n.target}\n` }
    const head = `${n.type === 'directory' ? 'directory' : n.content.length ? 'regular file' : 'regular empty file'}|${n.owner}|${n.group}|${n.mode.toString(8)}\n`
    return { stdout: n.type === 'file' ? `${head}${sha256(n.content)}  ${path}\n` : head }
  }

  /** The batched file probe (fileStateBatch): stat lines, then symlink targets, then sha256sum lines. */
  #statBatch(paths: string[]): Out {
    const stats: string[] = []
    const sums: string[] = []
    const links: string[] = []
    for (const p of paths) {
      const out = this.#stat(p)
      if (out.code) continue
      const [head, second] = out.stdout!.split('\n')
      stats.push(`${head}|${p}\n`)
      if (head!.startsWith('regular')) sums.push(`${second}\n`)
      if (head!.startsWith('symbolic link')) links.push(`${p}\n${second}\n`)
    }
    return { stdout: `${stats.join('')}@@MP-SPLIT\n${links.join('')}@@MP-SPLIT\n${sums.join('')}` }
  }

  #unitShow(unit: string): Out {
    const rt = this.units.get(unit)
    if (!this.unitFile(unit))
      return { stdout: 'LoadState=not-found\nActiveState=inactive\nUnitFileState=\nActiveEnterTimestampMonotonic=0\n' }
    return {
      stdout: `LoadState=loaded\nActiveState=${rt?.active ? 'active' : 'inactive'}\nUnitFileState=${rt?.enabled ? 'enabled' : 'disabled'}\nActiveEnterTimestampMonotonic=${rt?.active ? rt.since : 0}\n`,
    }
  }

  #ss(): string {
    const lines: string[] = []
    for (const [unit, rt] of this.units) {
      if (!rt.active) continue
      for (const s of SOCKETS[unit] ?? []) {
        const local = s.address.includes(':') ? `[${s.address}]:${s.port}` : `${s.address}:${s.port}`
        const proc = s.process ? ` users:(("${s.process}",pid=${rt.since},fd=3))` : ''
        lines.push(`LISTEN 0 128 ${local} 0.0.0.0:*${proc} uid:${this.users.get(s.user)!.uid} ino:1 sk:1`)
      }
    }
    const passwd = [...this.users].map(([name, u]) => `${name}:${u.uid}`)
    return `${lines.join('\n')}\n---\n${passwd.join('\n')}\n`
  }

  #aptListCount(): Out {
    return this.aptLists ? { stdout: '1\n' } : { stdout: '' }
  }

  get postgresUp(): boolean {
    return this.users.has('postgres') && this.units.get('postgresql.service')?.active === true
  }

  #psqlQuery(sql: string): Out {
    if (!this.postgresUp)
      return { code: 2, stderr: 'psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed' }
    let m: RegExpExecArray | null
    if ((m = /^SELECT rolcanlogin, coalesce\(rolpassword, ''\) FROM pg_authid WHERE rolname = '(.*)'$/.exec(sql))) {
      const r = this.roles.get(m[1]!.replace(/''/g, "'"))
      return { stdout: r ? `${r.login ? 't' : 'f'}\t${r.password}\n` : '' }
    }
    if (
      (m =
        /^SELECT pg_encoding_to_char\(encoding\), datcollate, datctype, pg_get_userbyid\(datdba\) FROM pg_database WHERE datname = '(.*)'$/.exec(
          sql,
        ))
    ) {
      const d = this.databases.get(m[1]!.replace(/''/g, "'"))
      return { stdout: d ? `${d.encoding}\t${d.collate}\t${d.ctype}\t${d.owner}\n` : '' }
    }
    this.#unexpected(`a Postgres query the fake does not know: ${sql}`)
  }

  /** The adoption guard's and `provision adopt`'s probes: the same answer whether a fact batch or apply asks. */
  #ownershipFacts(cmd: string): Out | undefined {
    if (cmd === hostOwnership.command.text) {
      const record = this.file(HOST_RECORD)
      return {
        stdout: `${record ? `record\t${record.toString('base64')}\n` : ''}${this.fs.get(SECRETS_DIR)?.type === 'directory' ? 'secret-store\n' : ''}`,
      }
    }
    // Config and keys only: the fake's Postgres holds no Synapse schema.
    if (cmd === synapseFootprint.command.text) {
      const found = [...this.fs.keys()]
        .filter((p) => this.fs.get(p)?.type === 'file')
        .flatMap((p) =>
          p === '/etc/matrix-synapse/homeserver.yaml'
            ? [`config\t${p}\n`]
            : /^\/(etc|var\/lib)\/matrix-synapse\/[^/]+\.signing\.key$/.test(p)
              ? [`signing key\t${p}\n`]
              : [],
        )
      return { stdout: found.join('') }
    }
    // What `provision adopt` reads of a hand-built server (the same globs as its probe).
    if (cmd === handBuiltFiles.command.text) {
      const b64 = (p: string) => (this.file(p) ?? Buffer.alloc(0)).toString('base64')
      const files = [...this.fs.keys()].filter((p) => this.fs.get(p)?.type === 'file')
      const glob = [
        /^\/etc\/matrix-synapse\/homeserver\.yaml$/,
        /^\/etc\/matrix-synapse\/conf\.d\/[^/]+\.yaml$/,
        /^\/etc\/matrix-synapse\/workers\/[^/]+\.yaml$/,
        /^\/etc\/systemd\/system\/matrix-synapse\.service\.d\/[^/]+\.conf$/,
        /^\/etc\/systemd\/system\/matrix-synapse-worker@\.service$/,
        /^\/etc\/redis\/redis\.conf$/,
      ]
      let out = files
        .filter((p) => glob.some((g) => g.test(p)))
        .sort()
        .map((p) => `file\t${p}\t${b64(p)}\n`)
        .join('')
      for (const [p, n] of [...this.fs].sort(([a], [b]) => a.localeCompare(b))) {
        if (n.type !== 'symlink' || posix.dirname(p) !== '/etc/apache2/sites-enabled') continue
        const target = posix.resolve(posix.dirname(p), n.target)
        out += `site\t${p}\t${target}\t${b64(target)}\n`
      }
      out += files
        .filter((p) => /^\/(etc|var\/lib)\/matrix-synapse\/[^/]+\.signing\.key$/.test(p))
        .map((p) => `key\t${p}\n`)
        .join('')
      return { stdout: out }
    }
    return undefined
  }

  // -- commands of apply ---------------------------------------------------------------------------

  #exec(cmd: string, stdin: string): Out {
    let m: RegExpExecArray | null
    // Read-only commands (dry runs read files for diffs).
    if ((m = rx(String.raw`^cat ${ARG}$`).exec(cmd))) return this.#cat(unquote(m[1]!))
    const ownership = this.#ownershipFacts(cmd)
    if (ownership) return ownership
    if (cmd === aptListsPresent.command.text) return this.#aptListCount()
    if ((m = rx(String.raw`^systemctl is-active ((?:${ARG} ?)+)$`).exec(cmd))) {
      const active = shellWords(m[1]!).map((u) => this.units.get(u)?.active === true)
      return { stdout: active.map((a) => (a ? 'active\n' : 'inactive\n')).join(''), code: active.every(Boolean) ? 0 : 3 }
    }
    if ((m = rx(String.raw`^stat -c '%U %a' ${ARG}$`).exec(cmd))) {
      const n = this.fs.get(unquote(m[1]!))
      if (!n || n.type === 'symlink') return { code: 1, stderr: `stat: cannot statx '${unquote(m[1]!)}': No such file or directory` }
      return { stdout: `${n.owner} ${n.mode.toString(8)}\n` }
    }
    this.#mutating(cmd)
    if (cmd === 'debconf-set-selections') {
      for (const line of stdin.split('\n').filter(Boolean)) {
        const [pkg, question, , ...value] = line.split(' ')
        this.debconf.set(`${pkg} ${question}`, value.join(' '))
      }
      return {}
    }
    if (/^DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a apt-get -q update /.test(cmd)) {
      const key = (line: string) => /signed-by=(\S+)\]/.exec(line)?.[1]
      const sources = [...this.fs]
        .filter(([p, n]) => p.startsWith('/etc/apt/sources.list.d/') && n.type === 'file')
        .flatMap(([, n]) => (n as { content: Buffer }).content.toString('utf8').split('\n').filter(Boolean))
      // A source whose keyring is missing fails apt-get update (NO_PUBKEY).
      const unsigned = sources.find((l) => key(l) && !this.fs.has(key(l)!))
      if (unsigned) return { code: 100, stderr: `E: The repository '${unsigned}' is not signed.` }
      this.aptLists = ['(distribution archive)', ...sources]
      return {}
    }
    const [guardBefore, guardAfter] = guardedInstall(raw`@@INSTALL@@`).text.split('@@INSTALL@@') as [string, string]
    if (cmd.startsWith(guardBefore) && cmd.endsWith(guardAfter)) {
      // The policy-rc.d guard: the package's maintainer scripts start or restart no matrix-synapse unit; then held.
      this.#policyGuard = true
      try {
        const r = this.#exec(cmd.slice(guardBefore.length, -guardAfter.length), stdin)
        if ((r.code ?? 0) === 0) this.held.add('matrix-synapse-py3')
        return r
      } finally {
        this.#policyGuard = false
      }
    }
    if (
      (m =
        /^DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a(?: NEEDRESTART_SUSPEND=1)? apt-get install -y -q --no-install-recommends(?: --allow-downgrades --allow-change-held-packages)? -o DPkg::Lock::Timeout=\d+ -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold (.+)$/.exec(
          cmd,
        ))
    ) {
      return this.#aptInstall(shellWords(m[1]!))
    }
    if (
      (m = rx(String.raw`^install -d -o ${ARG} -g ${ARG} -m ([0-7]{4}) ${ARG} && chown ${ARG} ${ARG} && chmod [0-7]{4} ${ARG}$`).exec(cmd))
    ) {
      this.mkdirp(unquote(m[4]!), { owner: unquote(m[1]!), group: unquote(m[2]!), mode: parseInt(m[3]!, 8) })
      return {}
    }
    if ((m = rx(String.raw`^ln -sfn ${ARG} ${ARG} && mv -Tf ${ARG} ${ARG}$`).exec(cmd))) {
      const path = unquote(m[4]!)
      if (this.fs.get(posix.dirname(path))?.type !== 'directory') return { code: 1, stderr: `ln: ${path}: No such file or directory` }
      this.fs.set(path, { type: 'symlink', target: unquote(m[1]!) })
      return {}
    }
    if (cmd === 'systemctl daemon-reload') {
      this.daemonReloadDue.clear()
      return {}
    }
    // Enable, and the first wave's start in the same round trip (systemd-service.ts): exit 97 when enable failed.
    // Units with a unit file of their own skip systemctl's SysV sync (SYSTEMCTL_SKIP_SYSV=1), the others do not.
    if (
      (m = /^((?:(?:SYSTEMCTL_SKIP_SYSV=1 )?systemctl enable [^|;&]+(?: && )?)+) \|\| exit 97(?:; systemctl start ([^|;]+))?$/.exec(cmd))
    ) {
      const units = m[1]!.split(' && ').flatMap((c) => shellWords(c).slice(shellWords(c).indexOf('enable') + 1))
      const enabled = this.#systemctl(units.map((unit) => ['systemctl', 'enable', unit]))
      if (enabled.code) return { ...enabled, code: 97 }
      return m[2] ? this.#systemctl(shellWords(m[2]).map((unit) => ['systemctl', 'start', unit])) : {}
    }
    // One unit or several per call (systemctl runs the jobs of several side by side).
    if (cmd.split(' && ').every((c) => /^systemctl (enable|start|stop|restart|reload)( \S+)+$/.test(c))) {
      return this.#systemctl(
        cmd.split(' && ').flatMap((c) =>
          shellWords(c)
            .slice(2)
            .map((unit) => ['systemctl', shellWords(c)[1]!, unit]),
        ),
      )
    }
    if (cmd.startsWith(`mkdir -p ${STATE_DIR} && printf`) || cmd.startsWith(`mkdir -p ${STATE_DIR}/backup &&`))
      return this.#recordPending(cmd)
    if ((m = rx(String.raw`^if \[ -f ${PENDING_RESTARTS} \]; then sed -i ${ARG} ${PENDING_RESTARTS}; fi$`).exec(cmd))) {
      const line = /^\/\^(.*)\$\/d$/.exec(unquote(m[1]!))![1]!.replace(/\\(.)/g, '$1')
      const old = this.text(PENDING_RESTARTS)
      if (old !== undefined)
        this.put(
          PENDING_RESTARTS,
          old
            .split('\n')
            .filter((l) => l !== line)
            .join('\n'),
        )
      return {}
    }
    // The restart ledger drops the backups of a settled unit, or all of them when nothing is due any more.
    if (cmd === `rm -rf ${STATE_DIR}/backup`) {
      for (const p of [...this.fs.keys()]) if (p === `${STATE_DIR}/backup` || p.startsWith(`${STATE_DIR}/backup/`)) this.fs.delete(p)
      return {}
    }
    if ((m = rx(String.raw`^rm -f ((?:${ARG.slice(1, -1)} ?)+)$`).exec(cmd))) {
      for (const p of shellWords(m[1]!)) this.fs.delete(p)
      return {}
    }
    // ... and restores a rejected unit's files: each copied beside and renamed over, or removed when new.
    if (cmd.split(' && ').every((c) => /^(cp -a \S+ \S+\.mp-restore|mv -Tf \S+\.mp-restore \S+|rm -f \S+)$/.test(c))) {
      for (const c of cmd.split(' && ').map(shellWords)) {
        if (c[0] === 'cp') this.fs.set(c[3]!, cloneNode(this.fs.get(c[2]!)!))
        else if (c[0] === 'mv') {
          this.fs.set(c[3]!, this.fs.get(c[2]!)!)
          this.fs.delete(c[2]!)
        } else this.fs.delete(c[2]!)
      }
      return {}
    }
    if (cmd === 'runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -f -') return this.#psqlApply(stdin)
    if (cmd === 'apache2ctl configtest') return this.#apacheConfigtest()
    if ((m = /^cd \/var\/lib\/matrix-synapse && runuser -u matrix-synapse -- (\S+) -m synapse\.config (.+)$/.exec(cmd)))
      return this.#synapseConfigCheck(m[1]!, shellWords(m[2]!))
    return this.#taskCommand(cmd)
  }

  #aptInstall(args: string[]): Out {
    if (!this.aptLists) return { code: 100, stderr: `E: Unable to locate package ${args[0]}` }
    for (const arg of args) {
      const [name, pinned] = arg.split('=') as [string, string | undefined]
      const candidate = this.distro.candidates[name]
      if (candidate === undefined) this.#unexpected(`apt-get install of a package the fake has no candidate for: ${name}`)
      if (
        name === 'matrix-synapse-py3' &&
        !this.aptLists.some((l) => l.includes('packages.matrix.org') && l.includes(` ${this.distro.codename} `))
      ) {
        return { code: 100, stderr: 'E: Unable to locate package matrix-synapse-py3' }
      }
      if (pinned !== undefined && pinned !== candidate) return { code: 100, stderr: `E: Version '${pinned}' for '${name}' was not found` }
      this.#installPackage(name, candidate)
    }
    return {}
  }

  /** What the packages bring: files, users, units (started and enabled, as Debian's maintainer scripts do). */
  #installPackage(name: string, version: string): void {
    this.packages.set(name, version)
    const unit = (u: string) => {
      this.put(`/lib/systemd/system/${u}`, `[Unit]\nDescription=${u} from package ${name}\n`)
      this.daemonReloadDue.delete(`/lib/systemd/system/${u}`)
      if (this.#policyGuard && u === 'matrix-synapse.service')
        this.units.set(u, { ...(this.units.get(u) ?? { active: false, since: 0 }), enabled: true })
      else this.startUnit(u, true)
    }
    switch (name) {
      case 'postgresql': {
        const major = this.distro.postgresMajor
        this.packages.set(`postgresql-${major}`, this.distro.candidates[`postgresql-${major}`]!)
        this.addUser('postgres', 'postgres', { ownGroup: true })
        const pg = { owner: 'postgres', group: 'postgres' }
        this.mkdirp(`/etc/postgresql/${major}/main/conf.d`)
        for (const d of [
          '/etc/postgresql',
          `/etc/postgresql/${major}`,
          `/etc/postgresql/${major}/main`,
          `/etc/postgresql/${major}/main/conf.d`,
        ])
          this.mkdirp(d, pg)
        this.put(
          `/etc/postgresql/${major}/main/postgresql.conf`,
          "data_directory = '/var/lib/postgresql/15/main'\ninclude_dir = 'conf.d'\n",
          { ...pg, mode: 0o644 },
        )
        this.put(
          `/etc/postgresql/${major}/main/pg_hba.conf`,
          'local all postgres peer\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n',
          { ...pg, mode: 0o640 },
        )
        unit('postgresql.service')
        return
      }
      case 'redis-server':
        this.addUser('redis', 'redis', { ownGroup: true })
        this.mkdirp('/etc/redis', { owner: 'redis', group: 'redis', mode: 0o2770 })
        this.put('/etc/redis/redis.conf', 'bind 127.0.0.1 -::1\nport 6379\n', { owner: 'redis', group: 'redis', mode: 0o640 })
        unit('redis-server.service')
        return
      case 'apache2':
        for (const d of ['sites-available', 'sites-enabled', 'conf-available', 'conf-enabled', 'mods-available', 'mods-enabled'])
          this.mkdirp(`/etc/apache2/${d}`)
        this.mkdirp('/var/www/html')
        this.put('/etc/apache2/ports.conf', 'Listen 80\n<IfModule ssl_module>\n\tListen 443\n</IfModule>\n')
        this.put('/etc/apache2/sites-available/000-default.conf', '<VirtualHost *:80>\n\tDocumentRoot /var/www/html\n</VirtualHost>\n')
        this.fs.set('/etc/apache2/sites-enabled/000-default.conf', { type: 'symlink', target: '../sites-available/000-default.conf' })
        for (const mod of ['mpm_event', 'authz_core', 'dir', 'mime'])
          this.put(`/etc/apache2/mods-enabled/${mod}.load`, `LoadModule ${mod}_module\n`)
        unit('apache2.service')
        return
      case 'python3-venv':
        this.packages.set('python3', this.distro.candidates.python3!)
        return
      case 'matrix-synapse-py3': {
        // The package as Synapse's debian/ builds it (read at v1.157.1): the postinst makes a system
        // user with its own group (adduser --system --group, since 1.66), statoverrides
        // /etc/matrix-synapse, /var/lib/matrix-synapse and /var/log/matrix-synapse to that user and
        // group 0755, writes server_name.yaml and report_stats.yaml from debconf; the venv; the unit is
        // enabled and started, and its start generates the signing key 0640 (see #execStartPre).
        this.addUser('matrix-synapse', 'matrix-synapse', { ownGroup: true })
        this.mkdirp('/etc/matrix-synapse/conf.d')
        this.mkdirp('/etc/matrix-synapse', { owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o755 })
        this.put(
          '/etc/matrix-synapse/homeserver.yaml',
          'pid_file: "/var/run/matrix-synapse.pid"\nlisteners:\n  - port: 8008\n    type: http\n',
        )
        this.put('/etc/matrix-synapse/log.yaml', 'version: 1\n')
        this.put(
          '/etc/matrix-synapse/conf.d/server_name.yaml',
          `server_name: ${this.debconf.get('matrix-synapse-py3 matrix-synapse/server-name') ?? 'localhost'}\n`,
        )
        this.put(
          '/etc/matrix-synapse/conf.d/report_stats.yaml',
          `report_stats: ${this.debconf.get('matrix-synapse-py3 matrix-synapse/report-stats') ?? 'false'}\n`,
        )
        for (const d of ['/var/lib/matrix-synapse', '/var/log/matrix-synapse'])
          this.mkdirp(d, { owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o755 })
        this.mkdirp('/opt/venvs/matrix-synapse/bin')
        this.put('/opt/venvs/matrix-synapse/bin/python', '#!fake python\n', { mode: 0o755 })
        this.venvs.set('/opt/venvs/matrix-synapse', new Map([['matrix-synapse', version.replace(/\+.*$/, '')]]))
        unit('matrix-synapse.service')
        return
      }
      default:
        return // libraries and tools: nothing the tasks look at
    }
  }

  #systemctl(calls: string[][]): Out {
    for (const [, verb, unit] of calls as [string, string, string][]) {
      if (!this.unitFile(unit)) return { code: 5, stderr: `Failed to ${verb} ${unit}: Unit ${unit} not found.` }
      const file = this.unitFile(unit)!
      // systemd runs the unit as it knew it at the last daemon-reload: a changed file not reloaded is a bug.
      const dropIns = [...this.daemonReloadDue].filter((p) => p === file || p.startsWith(`/etc/systemd/system/${unit}.d/`))
      if (dropIns.length)
        this.#unexpected(
          `systemctl ${verb} ${unit} with changed unit files not reloaded (${dropIns.join(', ')}): systemd warns "Run 'systemctl daemon-reload'"`,
        )
      if (verb === 'enable') this.units.set(unit, { ...(this.units.get(unit) ?? { active: false, since: 0 }), enabled: true })
      else if (verb === 'start') this.startUnit(unit, false)
      else if (verb === 'stop') {
        const u = this.units.get(unit)
        if (u) u.active = false
        this.restarts.push(`stop ${unit}`)
      } else {
        if (!this.units.get(unit)?.active) return { code: 1, stderr: `${unit} is not active, cannot ${verb}` }
        if (verb === 'restart') {
          this.#execStartPre(unit)
          this.units.get(unit)!.since = this.#clock++
        }
        if (unit === 'apache2.service') {
          this.apacheGeneration++
          this.#apacheLagLeft = verb === 'reload' ? this.apacheReloadLag : 0
        }
        this.restarts.push(`${verb} ${unit}`)
      }
    }
    return {}
  }

  /** The restart ledger: due units appended to the pending file, backups of files a validator may restore. */
  #recordPending(cmd: string): Out {
    let rest = cmd
    const take = (re: RegExp, each: (m: RegExpExecArray) => void) => {
      rest = rest.replace(re, (...args) => {
        each(args.slice(0, -2) as unknown as RegExpExecArray)
        return ''
      })
    }
    let out = ''
    take(new RegExp(String.raw`mkdir -p ${ARG}`, 'g'), (m) => this.mkdirp(unquote(m[1]!)))
    take(new RegExp(String.raw`printf '%s\\n' ((?:${ARG.slice(1, -1)} )+)>> ${PENDING_RESTARTS}`, 'g'), (m) => {
      this.put(
        PENDING_RESTARTS,
        (this.text(PENDING_RESTARTS) ?? '') +
          shellWords(m[1]!)
            .map((u) => `${u}\n`)
            .join(''),
      )
    })
    take(
      new RegExp(
        String.raw`if \[ -e ${ARG} \] \|\| \[ -L ${ARG} \]; then rm -f ${ARG} && cp -a ${ARG} ${ARG}; echo existed; else echo new; fi`,
        'g',
      ),
      (m) => {
        const src = unquote(m[1]!)
        const node = this.fs.get(src)
        if (node) this.fs.set(unquote(m[5]!), cloneNode(node))
        out += node ? 'existed\n' : 'new\n'
      },
    )
    if (rest.replace(/&&/g, '').trim()) this.#unexpected(`a restart-ledger script with parts the fake does not know: ${rest}`)
    return { stdout: out }
  }

  #psqlApply(sql: string): Out {
    if (!this.postgresUp) return { code: 2, stderr: 'psql: error: connection to server failed' }
    let m: RegExpExecArray | null
    if ((m = /ROLE "((?:[^"]|"")+)" LOGIN PASSWORD '(SCRAM-SHA-256\$[^']+)'/.exec(sql))) {
      this.roles.set(m[1]!.replace(/""/g, '"'), { login: true, password: m[2]! })
      return {}
    }
    if (
      (m = /^CREATE DATABASE "(.+?)" ENCODING '(.+?)' LC_COLLATE '(.+?)' LC_CTYPE '(.+?)' TEMPLATE template0 OWNER "(.+?)";$/.exec(sql))
    ) {
      if (!this.roles.has(m[5]!)) return { code: 1, stderr: `ERROR:  role "${m[5]}" does not exist` }
      this.databases.set(m[1]!, { encoding: m[2]!, collate: m[3]!, ctype: m[4]!, owner: m[5]! })
      return {}
    }
    if ((m = /^ALTER DATABASE "(.+?)" OWNER TO "(.+?)";$/.exec(sql))) {
      this.databases.get(m[1]!)!.owner = m[2]!
      return {}
    }
    this.#unexpected(`SQL the fake does not know: ${sql}`)
  }

  /** Enabled links resolve, referenced certificates exist, directives' modules are enabled. */
  #apacheConfigtest(): Out {
    const errors: string[] = []
    for (const [path, node] of this.fs) {
      if (!/^\/etc\/apache2\/(sites|conf)-enabled\/[^/]+$/.test(path)) continue
      const target = node.type === 'symlink' ? posix.resolve(posix.dirname(path), node.target) : path
      const text = this.text(target)
      if (text === undefined) {
        errors.push(`${path}: No such file or directory`)
        continue
      }
      for (const line of text.split('\n')) {
        const directive = /^\s*(\w+)/.exec(line)?.[1]
        const mod = directive && APACHE_DIRECTIVE_MODULES[directive]
        if (mod && !this.fs.has(`/etc/apache2/mods-enabled/${mod}.load`))
          errors.push(`${target}: Invalid command '${directive}', perhaps misspelled or defined by a module not included`)
        const file = /^\s*SSLCertificate(?:Key)?File "([^"]+)"/.exec(line)?.[1]
        if (file && !this.fs.has(file)) errors.push(`${target}: SSLCertificateFile: file '${file}' does not exist or is empty`)
      }
    }
    return errors.length ? { code: 1, stderr: `AH00526: Syntax error\n${errors.join('\n')}` } : { stdout: 'Syntax OK\n' }
  }

  /** `python -m synapse.config`: every file readable by matrix-synapse and valid YAML; no option Synapse removed. */
  #synapseConfigCheck(python: string, args: string[]): Out {
    if (!this.file(python)) return { code: 127, stderr: `${python}: not found` }
    const files: string[] = []
    for (const arg of args) {
      const path = /^--config-path=(.+)$/.exec(arg)?.[1]
      if (!path) this.#unexpected(`synapse.config argument ${arg}`)
      if (path.endsWith('/'))
        files.push(...[...this.fs.keys()].filter((p) => posix.dirname(p) === path.slice(0, -1) && p.endsWith('.yaml')).sort())
      else files.push(path)
    }
    for (const f of files) {
      if (!this.readableBy('matrix-synapse', f)) return { code: 1, stderr: `Error in configuration: ${f}: Permission denied or missing` }
      const config = (parseYaml(this.text(f)!) ?? {}) as Record<string, unknown>
      for (const removed of ['worker_replication_host', 'worker_replication_http_port', 'send_federation']) {
        if (removed in config) return { code: 1, stderr: `Error in configuration at '${removed}': removed option (${f})` }
      }
    }
    return {}
  }

  /** The commands of the tasks' guarded command resources and of the virtualenv resource. */
  #taskCommand(cmd: string): Out {
    let m: RegExpExecArray | null
    if ((m = /^useradd --system --user-group --home-dir \S+ --shell \S+ (\S+)$/.exec(cmd))) {
      this.addUser(m[1]!, m[1]!, { ownGroup: true })
      return {}
    }
    if (cmd === 'getent group matrix-synapse >/dev/null || groupadd --system matrix-synapse; usermod -a -G matrix-synapse matrix-synapse') {
      this.groups.add('matrix-synapse')
      this.users.get('matrix-synapse')!.groups.add('matrix-synapse')
      return {}
    }
    if (
      (m = rx(
        String.raw`^set -e; tmp=\$\(mktemp\);.* curl -fsSL --max-time 60 ${ARG} -o "\$tmp"; .*grep -qx ${ARG} \|\| .* install -m 0644 -o root -g root "\$tmp" (\S+)$`,
      ).exec(cmd))
    ) {
      this.put(m[3]!, `fake keyring from ${unquote(m[1]!)}\nfpr:${unquote(m[2]!)}\n`)
      return {}
    }
    if ((m = /^a2enmod -q ([\w ]+)$/.exec(cmd))) {
      for (const mod of m[1]!.split(' ')) this.put(`/etc/apache2/mods-enabled/${mod}.load`, `LoadModule ${mod}_module\n`)
      return {}
    }
    if (
      (m = rx(
        String.raw`^set -e; umask 077; mkdir -p (\S+); openssl req -x509 .* -addext ${ARG} -addext basicConstraints=critical,CA:TRUE -keyout (\S+)\.new -out (\S+)\.new;`,
      ).exec(cmd))
    ) {
      this.mkdirp(m[1]!)
      this.put(m[3]!, 'fake private key\n', { mode: 0o600 })
      this.put(m[4]!, `fake certificate ${unquote(m[2]!).replace(/^subjectAltName=/, '')}\n`)
      return {}
    }
    if (
      (m =
        /^cd \/var\/lib\/matrix-synapse && umask 077 && \{ \[ -e (\S+) \] \|\| runuser -u (\S+) -- (\S+) -m synapse\.app\.homeserver .* --generate-keys; \} && chown (\S+):(\S+) \1 && chmod (\d+) \1$/.exec(
          cmd,
        ))
    ) {
      const [, key, user, python, owner, group, mode] = m as unknown as string[]
      if (!this.fs.get(key!)) {
        if (!this.file(python!)) return { code: 127, stderr: `${python}: not found` }
        // Synapse itself, with our umask 077: 0600 whatever mode it asks for.
        this.put(key!, 'ed25519 a_fake signingkey\n', { owner: user!, group: this.users.get(user!)!.group, mode: 0o600 })
      }
      const node = this.fs.get(key!) as Extract<FsNode, { type: 'file' }>
      if (!this.users.has(owner!) || !this.groups.has(group!)) return { code: 1, stderr: `chown: invalid user: '${owner}:${group}'` }
      this.fs.set(key!, { ...node, owner: owner!, group: group!, mode: parseInt(mode!, 8) })
      return {}
    }
    if (
      (m = /^set -e; t=''; .*echo '([0-9a-f]{64}) {2}(\S+)' \| sha256sum -c --quiet .*mv "\$t"\/(element-\S+) (\S+); rm -rf "\$t"$/.exec(
        cmd,
      ))
    ) {
      const tarball = this.file(m[2]!)
      if (!tarball || sha256(tarball) !== m[1]) return { code: 1, stderr: `SHA-256 of ${m[2]} is not ${m[1]}` }
      this.removeTree(m[4]!)
      this.mkdirp(m[4]!)
      this.put(`${m[4]}/index.html`, '<!doctype html><title>Element</title>\n')
      return {}
    }
    if ((m = /^rm -rf (\S+) && mkdir -p \1$/.exec(cmd))) {
      this.removeTree(m[1]!)
      this.mkdirp(m[1]!)
      return {}
    }
    if ((m = rx(String.raw`^set -e; \[ -x ${ARG} \] \|\| python3 -m venv +${ARG}; (.*)$`).exec(cmd))) {
      if (!this.packages.has('python3') || !this.packages.has('python3-venv'))
        return { code: 1, stderr: 'The virtual environment was not created successfully because ensurepip is not available.' }
      const venv = unquote(m[2]!)
      const parts = m[3]!.split('; ')
      // pip installs without byte-compiling; compileall then compiles the venv's lib on every core.
      if (parts.pop() !== `${venv}/bin/python -m compileall -q -j0 ${venv}/lib >/dev/null || true`)
        this.#unexpected(`venv command without its compileall: ${cmd}`)
      const [install, uninstall] = parts
      const words = shellWords(install!)
      if (
        words[0] !== `${venv}/bin/pip` ||
        words[1] !== 'install' ||
        !words.includes('--no-deps') ||
        !words.includes('--require-hashes') ||
        !words.includes('--no-compile')
      )
        this.#unexpected(`pip command ${cmd}`)
      const requirements = this.text(words[words.indexOf('-r') + 1]!)
      if (requirements === undefined) return { code: 1, stderr: 'ERROR: Could not open requirements file' }
      const dists =
        this.venvs.get(venv) ??
        new Map([
          ['pip', '23.0.1'],
          ['setuptools', '66.1.1'],
        ])
      if (words.includes('--no-index')) {
        // The wheelhouse's requirements.txt: each wheel pinned by its own digest, checked as pip does.
        const findLinks = words[words.indexOf('--find-links') + 1]!
        for (const line of requirements.split('\n').filter(Boolean)) {
          const [, name, version, hash] =
            /^(\S+)==(\S+) --hash=sha256:([0-9a-f]{64})$/.exec(line) ?? this.#unexpected(`requirements line ${line}`)
          const wheel = [...this.fs.keys()].find(
            (p) => posix.dirname(p) === findLinks && posix.basename(p).startsWith(`${name!.replace(/-/g, '_')}-${version}-`),
          )
          if (!wheel) return { code: 1, stderr: `ERROR: Could not find a version that satisfies the requirement ${name}==${version}` }
          if (sha256(this.file(wheel)!) !== hash)
            return { code: 1, stderr: `ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. ${name}` }
          dists.set(name!, version!)
        }
      } else {
        for (const e of entriesFor(parseLock(requirements, 'lock.txt'), targetEnvironment(this.venvPython))) dists.set(e.name, e.version)
      }
      if (uninstall) for (const name of shellWords(uninstall).slice(4)) dists.delete(name)
      this.mkdirp(`${venv}/bin`)
      this.put(`${venv}/bin/python`, '#!fake python\n', { mode: 0o755 })
      this.venvs.set(venv, dists)
      return {}
    }
    // The generation Apache's children serve (mod_status on loopback): the old one for a while after a reload.
    if (/^curl -sk --max-time 10 --resolve \S+ \S+ \| sed -n '\S+ParentServerConfigGeneration: \/\/p'$/.test(cmd)) {
      if (!this.units.get('apache2.service')?.active) return { stdout: '' }
      if (this.#apacheLagLeft === 0) return { stdout: `${this.apacheGeneration}\n` }
      this.#apacheLagLeft--
      return { stdout: `${this.apacheGeneration - 1}\n` }
    }
    // The apache task's restart for a new MPM sizing.
    if (
      (m = rx(String.raw`^apache2ctl configtest && systemctl restart apache2\.service && mkdir -p (\S+) && cp ${ARG} ${ARG}$`).exec(cmd))
    ) {
      const test = this.#apacheConfigtest()
      if (test.code) return test
      const restart = this.#systemctl([['systemctl', 'restart', 'apache2.service']])
      if (restart.code) return restart
      this.mkdirp(m[1]!)
      this.put(unquote(m[3]!), this.text(unquote(m[2]!))!)
      return {}
    }
    if (
      (m =
        /^stale=\$\(for f in (\S+)\/\*\.yaml; .* case " "(\S+|'[^']*')" " in .*\); units=; .*; systemctl disable --now \$units && for n in \$stale; do rm -f .*; done$/.exec(
          cmd,
        ))
    ) {
      for (const n of this.#retiredWorkers(m[1]!, unquote(m[2]!))) {
        this.fs.delete(`${m[1]}/${n}.yaml`)
        this.fs.delete(`/etc/matrix-synapse/${n}-log.yaml`)
      }
      return {}
    }
    this.#unexpected(`a command the fake does not know: ${cmd}`)
  }
}
