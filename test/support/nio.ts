/**
 * matrix-nio, a real other client (Python), for the old-style password login: installed from PyPI,
 * pinned, into a venv under .cache/ once per machine (CI makes it on a fresh clone: about 20 s).
 */
import { execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { withCacheLock } from '../../src/artifacts/cache-lock.js'
import { CACHE_DIR } from './artifacts.js'

export const NIO_VERSION = '0.26.0'
const VENV = `${CACHE_DIR}nio-venv-${NIO_VERSION}`
const SCRIPT = fileURLToPath(new URL('./nio-login.py', import.meta.url))

async function nioPython(): Promise<string> {
  const python = join(VENV, 'bin', 'python')
  const complete = () => existsSync(join(VENV, '.complete'))
  if (complete()) return python
  // Two test files at once: the second waits, then finds the venv made (--clear would empty it under the first).
  return withCacheLock(`${VENV}.lock`, async () => {
    if (complete()) return python
    const run = promisify(execFile)
    await run('python3', ['-m', 'venv', '--clear', VENV])
    await run(python, ['-m', 'pip', 'install', '--quiet', `matrix-nio==${NIO_VERSION}`], { timeout: 600_000 })
    await writeFile(join(VENV, '.complete'), `matrix-nio==${NIO_VERSION}\n`)
    return python
  })
}

export interface NioResult {
  user_id?: string
  device_id?: string
  token_prefix?: string
  whoami?: string
  sent?: boolean
  logout?: boolean
  error?: string
}

/** matrix-nio logs `user` in with its password (on stdin) at https://<hostname>:<port> trusting only `caFile`. */
export async function nioPasswordLogin(o: {
  hostname: string
  port: number
  caFile: string
  user: string
  password: string
}): Promise<NioResult> {
  const python = await nioPython()
  return new Promise((resolve, reject) => {
    const child = spawn(python, [SCRIPT, `https://${o.hostname}:${o.port}`, o.user, o.caFile], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => (out += c.toString()))
    child.stderr.on('data', (c: Buffer) => (err += c.toString()))
    const timer = setTimeout(() => child.kill(), 120_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as NioResult)
      } catch {
        reject(new Error(`matrix-nio exited ${code}: ${(out + err).slice(-1500)}`))
      }
    })
    child.stdin.end(o.password)
  })
}
