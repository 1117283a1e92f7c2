import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { cliOutput, runCli, type CliOptions } from '../support/cli.js'
import { startHosts, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'

const run = promisify(execFile)
const repo = fileURLToPath(new URL('../../', import.meta.url))
const pkg = JSON.parse(await readFile(join(repo, 'package.json'), 'utf8')) as { name: string; version: string }

/**
 * A port nobody listens on right now, so the test never meets a developer's sandbox. Below the kernel's
 * ephemeral range (ip_local_port_range, 32768 up): Docker publishes the other test files' containers
 * there meanwhile, and could take a port picked from it before the sandbox publishes on it.
 */
async function freePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer()
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
    })
    if (free) return port
  }
}

const containers = async (name: string) =>
  (await run('docker', ['ps', '-a', '--filter', `name=^${name}$`, '--format', '{{.Names}}'])).stdout.trim()

/**
 * The npm package as users get it: `npm pack`, then `npm install ./matrix-provision-*.tgz` into an empty
 * directory outside the repository (dependencies from npm's cache when it has them), and every run
 * below uses that installation, not the checkout: `npx provision`, a dry run against a real host, and
 * `provision sandbox` end to end (up from nothing, converged re-run, --down) with the package's own
 * docker/ and inventories/.
 */
describe.skipIf(!inject('docker'))('the packed package installed into an empty directory', () => {
  let dir: string
  let app: string
  let tarball: string
  let installed: CliOptions
  let hosts: TestHosts | undefined
  const started = Date.now()

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mp-package-'))
    // The bundle is current (test/support/build-cli.ts), so pack without running prepare again.
    await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: repo, maxBuffer: 1 << 24 })
    tarball = join(
      dir,
      (await readdir(dir)).find((f) => f.endsWith('.tgz'))!,
    )
    app = join(dir, 'app')
    await mkdir(app)
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'provision-user', private: true }))
    const t0 = Date.now()
    await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], {
      cwd: app,
      maxBuffer: 1 << 24,
      timeout: 300_000,
    })
    console.log(`npm install of the packed package: ${((Date.now() - t0) / 1000).toFixed(0)} s`)
    installed = { cwd: app, bin: join(app, 'node_modules', pkg.name, 'bin', 'provision.js') }
  })
  afterAll(async () => {
    await hosts?.stop()
    await rm(dir, { recursive: true, force: true })
    console.log(`installed-package.test.ts: ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })

  it('holds the bundle, docker/ and inventories/, not the sources or the tests', async () => {
    const files = (await run('tar', ['tzf', tarball])).stdout.split('\n').filter(Boolean)
    for (const f of [
      'bin/provision.js',
      'dist/cli/cli.js',
      'dist/cli/cli.cjs',
      'docker/Dockerfile',
      'docker/build-base-images.sh',
      'inventories/sandbox.yaml',
      'inventories/example.yaml',
      'package.json',
      'README.md',
    ])
      expect(files, f).toContain(`package/${f}`)
    expect(files.filter((f) => /^package\/(src|test|tasks|dist\/src)\//.test(f))).toEqual([])
  })

  it('npx provision --help, --version and schema run from the installation', async () => {
    const help = await run('npx', ['--no-install', 'provision', '--help'], { cwd: app })
    expect(help.stdout).toContain('provision sandbox')
    const version = await run('npx', ['--no-install', 'provision', '--version'], { cwd: app })
    expect(version.stdout.trim()).toBe(pkg.version)
    const schema = await runCli(['schema'], installed)
    expect(schema.code, cliOutput(schema)).toBe(0)
    expect(JSON.parse(schema.stdout)).toMatchObject({ type: 'object' })
  })

  it('plans against a real host (--dry-run --exit-code) and keeps a --log-file with its own pino', async () => {
    hosts = await startHosts(['pkg1'])
    const inventory = await writeTestInventory(hosts, [{ name: 'pkg1', roles: ['redis'] }], { serverName: 'package.test' })
    const log = join(dir, 'dry-run.log')
    const r = await runCli(['--inventory', inventory, '--dry-run', '--exit-code', '--log-file', log], installed)
    expect(r.code, cliOutput(r)).toBe(10)
    expect(r.stdout).toContain('redis-server')
    expect(r.stdout).toMatch(/Plan: \d+ to add/)
    const events = (await readFile(log, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string })
    expect(events.at(-1)?.msg).toBe('run finished')
    await hosts.stop()
    hosts = undefined
  })

  describe('provision sandbox from the installation', () => {
    let env: NodeJS.ProcessEnv
    let sandboxDir: string
    const name = `mp-sandbox-test-${Math.random().toString(36).slice(2, 8)}`
    // A first run builds the wheelhouse and installs the whole stack: minutes, more on a busy machine.
    const sandbox = (args: string[]) => runCli(['sandbox', ...args], { ...installed, env, timeoutMs: 1_700_000 })

    beforeAll(async () => {
      sandboxDir = join(dir, 'sandbox')
      const ssh = await freePort()
      let https = await freePort()
      while (https === ssh) https = await freePort()
      // The repository's cache: the wheelhouse other tests built is reused, not built twice.
      env = {
        ...process.env,
        SANDBOX_NAME: name,
        SANDBOX_DIR: sandboxDir,
        SANDBOX_SSH_PORT: String(ssh),
        SANDBOX_HTTPS_PORT: String(https),
        SANDBOX_CACHE_DIR: join(repo, '.cache'),
      }
    })
    afterAll(async () => {
      await run('docker', ['rm', '-f', '-v', name]).catch(() => undefined)
    })

    it('--element with a missing file is bad usage: exit 2 before anything starts', async () => {
      const r = await sandbox(['--element', join(dir, 'no-such-element.tar.gz')])
      expect(r.code, cliOutput(r)).toBe(2)
      expect(r.stderr + r.stdout).toContain('--element: no such file')
      expect(await containers(name)).toBe('')
    })

    it('comes up from nothing, prints how to reach it, and its admin logs in over HTTPS through the published port', async () => {
      const t0 = Date.now()
      const r = await sandbox([])
      console.log(`first sandbox run: ${((Date.now() - t0) / 1000).toFixed(0)} s`)
      expect(r.code, cliOutput(r)).toBe(0)
      expect(r.stdout).toContain('@admin:sandbox.test')
      expect(r.stdout).toContain(
        `curl --cacert ${join(sandboxDir, 'ca.pem')} --resolve matrix.sandbox.test:${env.SANDBOX_HTTPS_PORT}:127.0.0.1 https://matrix.sandbox.test:${env.SANDBOX_HTTPS_PORT}/`,
      )
      expect(r.stdout).toContain('127.0.0.1 matrix.sandbox.test element.sandbox.test sandbox.test')
      expect(r.stdout).toContain('STAND-IN')
      expect(await containers(name)).toBe(name)

      const inventory = await readFile(join(sandboxDir, 'inventory.yaml'), 'utf8')
      expect(inventory).toContain(`port: ${env.SANDBOX_SSH_PORT}`)
      const password = (await readFile(join(sandboxDir, 'admin-password'), 'utf8')).trim()
      const client = new MatrixClient({
        port: Number(env.SANDBOX_HTTPS_PORT),
        hostname: 'matrix.sandbox.test',
        ca: await readFile(join(sandboxDir, 'ca.pem'), 'utf8'),
      })
      await client.login('admin', password)
      const whoami = await client.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')
      expect(whoami.json.user_id).toBe('@admin:sandbox.test')
      const element = await new MatrixClient({
        port: Number(env.SANDBOX_HTTPS_PORT),
        hostname: 'element.sandbox.test',
        ca: await readFile(join(sandboxDir, 'ca.pem'), 'utf8'),
      }).call('GET', '/config.json')
      expect(element.json).toMatchObject({
        default_server_config: { 'm.homeserver': { base_url: `https://matrix.sandbox.test:${env.SANDBOX_HTTPS_PORT}` } },
      })
    }, 1_800_000)

    it('a second run reuses the container and the provisioning reports no changes; the password stays', async () => {
      const password = await readFile(join(sandboxDir, 'admin-password'), 'utf8')
      const t0 = Date.now()
      const r = await sandbox([])
      console.log(`second sandbox run: ${((Date.now() - t0) / 1000).toFixed(0)} s`)
      expect(r.code, cliOutput(r)).toBe(0)
      expect(r.stdout).toContain('running; reusing it')
      expect(r.stdout).toContain('sandbox: no changes')
      expect(await readFile(join(sandboxDir, 'admin-password'), 'utf8')).toBe(password)
    })

    it('--element FILE serves that release instead of the stand-in, verified by the SHA-256 computed from the file', async () => {
      // A release tarball of Element's layout: the stand-in's, copied out of the cache as a user's download.
      const release = join(dir, 'element-v1.11.90.tar.gz')
      await run('cp', [join(repo, '.cache', 'element', 'element-v1.11.90.tar.gz'), release])
      const r = await sandbox(['--element', release])
      expect(r.code, cliOutput(r)).toBe(0)
      expect(r.stdout).toContain('COMPUTED LOCALLY')
      expect(r.stdout).not.toContain('STAND-IN')
      const element = await new MatrixClient({
        port: Number(env.SANDBOX_HTTPS_PORT),
        hostname: 'element.sandbox.test',
        ca: await readFile(join(sandboxDir, 'ca.pem'), 'utf8'),
      }).call('GET', '/config.json')
      expect(element.status).toBe(200)
    })

    it('--down removes the container and the sandbox directory', async () => {
      const r = await sandbox(['--down'])
      expect(r.code, cliOutput(r)).toBe(0)
      expect(await containers(name)).toBe('')
      expect(existsSync(sandboxDir)).toBe(false)
    })
  })
})
