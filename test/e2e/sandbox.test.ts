import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { provision } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'

const run = promisify(execFile)

/** A port nobody listens on right now (the kernel's pick), so the test never meets a developer's sandbox. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

const containers = async (name: string) => (await run('docker', ['ps', '-a', '--filter', `name=^${name}$`, '--format', '{{.Names}}'])).stdout.trim()

/** `provision sandbox` end to end: its own container name, ports and directory; up, converged re-run, down. */
describe.skipIf(!inject('docker'))('provision sandbox', () => {
  let env: NodeJS.ProcessEnv
  let dir: string
  const name = `mp-sandbox-test-${Math.random().toString(36).slice(2, 8)}`

  beforeAll(async () => {
    dir = join(await mkdtemp(join(tmpdir(), 'mp-sandbox-')), 'sandbox')
    const [ssh, https] = [await freePort(), await freePort()]
    env = { ...process.env, SANDBOX_NAME: name, SANDBOX_DIR: dir, SANDBOX_SSH_PORT: String(ssh), SANDBOX_HTTPS_PORT: String(https) }
  })
  afterAll(async () => {
    await run('docker', ['rm', '-f', '-v', name]).catch(() => undefined)
    await rm(join(dir, '..'), { recursive: true, force: true })
  })

  it('comes up from nothing, prints how to reach it, and its admin logs in over HTTPS through the published port', async () => {
    const started = Date.now()
    const r = await provision(['sandbox'], env)
    console.log(`first sandbox run: ${((Date.now() - started) / 1000).toFixed(0)} s`)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('@admin:sandbox.test')
    expect(r.stdout).toContain(`curl --cacert ${join(dir, 'ca.pem')} --resolve matrix.sandbox.test:${env.SANDBOX_HTTPS_PORT}:127.0.0.1 https://matrix.sandbox.test:${env.SANDBOX_HTTPS_PORT}/`)
    expect(r.stdout).toContain('127.0.0.1 matrix.sandbox.test element.sandbox.test sandbox.test')
    expect(r.stdout).toContain('STAND-IN')
    expect(await containers(name)).toBe(name)

    const inventory = await readFile(join(dir, 'inventory.yaml'), 'utf8')
    expect(inventory).toContain(`port: ${env.SANDBOX_SSH_PORT}`)
    const password = (await readFile(join(dir, 'admin-password'), 'utf8')).trim()
    const client = new MatrixClient({ port: Number(env.SANDBOX_HTTPS_PORT), hostname: 'matrix.sandbox.test', ca: await readFile(join(dir, 'ca.pem'), 'utf8') })
    await client.login('admin', password)
    const whoami = await client.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')
    expect(whoami.json.user_id).toBe('@admin:sandbox.test')
    const element = await new MatrixClient({ port: Number(env.SANDBOX_HTTPS_PORT), hostname: 'element.sandbox.test', ca: await readFile(join(dir, 'ca.pem'), 'utf8') }).call('GET', '/config.json')
    expect(element.json).toMatchObject({ default_server_config: { 'm.homeserver': { base_url: `https://matrix.sandbox.test:${env.SANDBOX_HTTPS_PORT}` } } })
  })

  it('a second run reuses the container and the provisioning reports no changes; the password stays', async () => {
    const password = await readFile(join(dir, 'admin-password'), 'utf8')
    const started = Date.now()
    const r = await provision(['sandbox'], env)
    console.log(`second sandbox run: ${((Date.now() - started) / 1000).toFixed(0)} s`)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('running; reusing it')
    expect(r.stdout).toContain('sandbox: no changes')
    expect(await readFile(join(dir, 'admin-password'), 'utf8')).toBe(password)
  })

  it('--down removes the container and the sandbox directory', async () => {
    const r = await provision(['sandbox', '--down'], env)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(await containers(name)).toBe('')
    expect(existsSync(dir)).toBe(false)
  })
})
