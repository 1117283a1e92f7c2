import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { isSecret } from '../core/secret.js'
import type { FileWrite } from './connection.js'
import type { ExecRequest } from './exec.js'
import { atomicWriteScript, atomicWritesScript, extractTarScript, octalMode } from './remote-command.js'
import { tarStream } from './tar.js'

/** Options of putFile/putDirectory (the Connection contract's, plus a deadline). */
export interface PutOptions {
  owner?: string
  group?: string
  mode?: number
  /** Deadline for the whole transfer; defaults to the host's ssh.commandTimeoutMs. */
  timeoutMs?: number
}

/** A command that moves bytes to the host, and what its failure message calls it. */
export interface Transfer {
  request: ExecRequest
  what: string
}

/** A FileWrite as bytes plus its script parameters and the line the log shows (never the content). */
function prepareWrite(file: FileWrite) {
  const secret = isSecret(file.content)
  const content = isSecret(file.content)
    ? Buffer.from(file.content.reveal(), 'utf8')
    : typeof file.content === 'string'
      ? Buffer.from(file.content, 'utf8')
      : file.content
  const owner = file.owner ?? 'root'
  const group = file.group ?? 'root'
  const mode = file.mode ?? (secret ? 0o600 : 0o644)
  const display = `write ${file.path} (${owner}:${group} ${octalMode(mode)}, ${content.length} bytes${secret ? ', secret' : ''})`
  return { path: file.path, owner, group, mode, size: content.length, content, display }
}

/** One file written atomically, its content on stdin. */
export function writeRequest(file: FileWrite): Transfer {
  const w = prepareWrite(file)
  return { request: { command: atomicWriteScript(w).text, display: w.display, stdin: w.content }, what: `writing ${file.path}` }
}

/** Many files in one round trip, in order; the script stops at the first failure. */
export function writesRequest(files: readonly FileWrite[]): Transfer {
  const ws = files.map(prepareWrite)
  const display = `write ${ws.length} files: ${ws.map((w) => w.display.replace(/^write /, '')).join('; ')}`
  return {
    request: { command: atomicWritesScript(ws).text, display, stdin: Buffer.concat(ws.map((w) => w.content)) },
    what: `writing ${files.map((f) => f.path).join(', ')}`,
  }
}

/** A controller file streamed to a root-owned path (written atomically). */
export async function putFileRequest(localPath: string, remotePath: string, options: PutOptions): Promise<Transfer> {
  const size = (await stat(localPath)).size
  const owner = options.owner ?? 'root'
  const group = options.group ?? 'root'
  const mode = options.mode ?? 0o644
  const script = atomicWriteScript({ path: remotePath, owner, group, mode, size })
  const display = `upload ${localPath} -> ${remotePath} (${owner}:${group} ${octalMode(mode)}, ${size} bytes)`
  const stdin = createReadStream(localPath, { highWaterMark: 256 * 1024 })
  const request: ExecRequest = { command: script.text, display, stdin }
  if (options.timeoutMs !== undefined) request.timeoutMs = options.timeoutMs
  return { request, what: `uploading ${localPath} to ${remotePath}` }
}

/** A controller directory as one tar stream, unpacked into remoteDir. */
export async function putDirectoryRequest(localDir: string, remoteDir: string, options: PutOptions): Promise<Transfer> {
  if (!(await stat(localDir)).isDirectory()) throw new Error(`${localDir} is not a directory`)
  const owner = options.owner ?? 'root'
  const group = options.group ?? 'root'
  // Directories get an x wherever the file mode has an r.
  const dirMode = options.mode === undefined ? 0o755 : options.mode | ((options.mode & 0o444) >> 2)
  const script = extractTarScript({ dir: remoteDir, owner, group, dirMode })
  const tarOptions = options.mode === undefined ? { owner, group, dirMode } : { owner, group, dirMode, fileMode: options.mode }
  const display = `upload directory ${localDir} -> ${remoteDir} (${owner}:${group}${options.mode === undefined ? '' : ` ${octalMode(options.mode)}`})`
  const request: ExecRequest = { command: script.text, display, stdin: tarStream(localDir, tarOptions) }
  if (options.timeoutMs !== undefined) request.timeoutMs = options.timeoutMs
  return { request, what: `uploading ${localDir} to ${remoteDir}` }
}
