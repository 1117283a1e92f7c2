/** Host-to-host streams through the controller: OLD's stdout into NEW's stdin. */
import { PassThrough, Transform } from 'node:stream'
import { raw, type ShellCommand } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'

/** Relay OLD's stdout into NEW's stdin through the controller, with backpressure; both exit codes judged. */
export async function relay(
  from: Connection,
  send: ShellCommand,
  to: Connection,
  receive: ShellCommand,
  what: string,
  sendStdin?: string,
): Promise<number> {
  let bytes = 0
  // Counted in a Transform: a 'data' listener would switch the stream to flowing and lose the head.
  const pipe = new PassThrough({ highWaterMark: 1 << 20 })
  const counted = pipe.pipe(new Transform({ transform: (chunk: Buffer, _e, cb) => ((bytes += chunk.length), cb(null, chunk)) }))
  const receiving = to.run(receive, { stdin: counted, timeoutMs: 0, allowFailure: true })
  const sending = from.run(send, { stdoutTo: pipe, timeoutMs: 0, stdin: sendStdin, allowFailure: true }).then((r) => {
    if (r.code === 0) pipe.end()
    else pipe.destroy(new Error(`${from.host} exited ${r.code}`))
    return r
  })
  const [s, r] = await Promise.all([sending, receiving])
  if (s.code !== 0 || r.code !== 0) {
    throw new Error(
      `${what}: ${from.host} exited ${s.code ?? s.signal ?? 'without status'}${s.stderr.trim() ? ` (${s.stderr.trim().split('\n').at(-1)})` : ''}, ${to.host} exited ${r.code ?? r.signal ?? 'without status'}${r.stderr.trim() ? ` (${r.stderr.trim().split('\n').at(-1)})` : ''}`,
    )
  }
  return bytes
}

// path, size, whole-second mtime (GNU tar keeps no fraction): Synapse's media files are written once.
export const LIST_FILES = raw`find . -type f -printf '%P\\t%s\\t%T@\\n' | sed 's/\\.[0-9]*$//' | LC_ALL=C sort`
