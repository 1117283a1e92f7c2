import { existsSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { CliIo } from '../io.js'
import type { Verb } from '../verb.js'
import { loadInventory } from '../../inventory/load.js'
import { ADMIN_USER, ensureAdmin } from './admin.js'
import { prepareElement, prepareWheelhouse } from './artifacts.js'
import { ensureContainer, ensureImages, removeContainer, requireDocker } from './container.js'
import { writeSandboxInventory } from './inventory.js'
import { copyCertificate, ensureKey, installAuthorizedKey, writeKnownHosts } from './keys.js'
import { SandboxError, sandboxSettings, shown, type SandboxSettings } from './settings.js'

/**
 * `provision sandbox`: the whole stack in one local systemd container, provisioned over real SSH by
 * the same entry point as any inventory (`provision`, handed in by the CLI). `--down` removes the container and the sandbox directory.
 */
export interface SandboxOptions {
  down: boolean
  /** Path or URL of an Element Web release tarball; a local stand-in when unset. */
  element?: string
  verbose: boolean
  io: CliIo
  /** The CLI's entry point, handed in (a verb does not import the CLI): provisions the sandbox's inventory. */
  provision: (argv: string[], io: CliIo) => Promise<number>
}

export const run: Verb = ({ values, io, provision }) =>
  sandbox({ down: values.down ?? false, element: values.element, verbose: values.verbose ?? false, io, provision })

/** Marks a directory as made by this command: --down deletes only such a directory. */
const MARKER = '.provision-sandbox'

export async function sandbox(o: SandboxOptions): Promise<number> {
  const say = (line: string) => o.io.out(`==> ${line}\n`)
  try {
    const s = sandboxSettings(o.io.env)
    if (o.element && !/^https?:\/\//.test(o.element) && !existsSync(o.element))
      throw new SandboxError(`--element: no such file ${o.element} (give a path or an http(s) URL of an element-vX.Y.Z.tar.gz)`, 2)
    await requireDocker(say)
    return o.down ? await down(s, say) : await up(s, o, say)
  } catch (error) {
    if (!(error instanceof SandboxError)) throw error
    o.io.err(`provision sandbox: ${error.message}\n`)
    return error.exitCode
  }
}

async function up(s: SandboxSettings, o: SandboxOptions, say: (line: string) => void): Promise<number> {
  const started = Date.now()
  await ensureImages(s, say, o.verbose)
  await ensureContainer(s, say)

  await mkdir(s.dir, { recursive: true, mode: 0o700 })
  await writeFile(join(s.dir, MARKER), 'made by provision sandbox; removed by provision sandbox --down\n')
  const { publicKey } = await ensureKey(s.dir)
  await installAuthorizedKey(s.name, publicKey)
  await writeKnownHosts(s.name, s.sshPort, join(s.dir, 'known_hosts'))
  await prepareWheelhouse(s, say, o.verbose)
  const element = await prepareElement(s, o.element, say)
  await writeSandboxInventory(s.template, {
    file: s.inventory,
    sandboxDir: s.dir,
    sshPort: s.sshPort,
    httpsPort: s.httpsPort,
    element,
    lockDir: s.lockDir,
  })
  say(`inventory: ${shown(s.inventory)} (from ${shown(s.template)})`)

  say(`provisioning ${s.name} over SSH (127.0.0.1:${s.sshPort})`)
  const code = await o.provision(['--inventory', s.inventory, ...(o.verbose ? ['--verbose'] : [])], o.io)
  if (code !== 0) {
    o.io.err(
      `provision sandbox: provisioning failed (exit ${code}); the container keeps running: look inside with\n  ${sshCommand(s)}\nor remove everything with: provision sandbox --down\n`,
    )
    return code
  }

  const host = (await loadInventory(s.inventory, o.io.env)).hosts[0]!
  const passwordFile = join(s.dir, 'admin-password')
  const admin = await ensureAdmin(host, passwordFile)
  const ca = join(s.dir, 'ca.pem')
  await copyCertificate(s.name, host.vars.publicHost, ca)

  const v = host.vars
  const https = (name: string) => `https://${name}:${s.httpsPort}`
  const lines = [
    '',
    `The sandbox is ready (${((Date.now() - started) / 1000).toFixed(0)} s): container ${s.name}, server name ${v.serverName}`,
    `  ports       127.0.0.1:${s.sshPort} -> 22 (ssh), 127.0.0.1:${s.httpsPort} -> 443 (https)`,
    `  /etc/hosts  127.0.0.1 ${v.publicHost} ${v.element.host} ${v.serverName}`,
    `  CA          ${shown(ca)}  (the self-signed certificate Apache serves; trust it, or pass it as below)`,
    `  try         curl --cacert ${shown(ca)} --resolve ${v.publicHost}:${s.httpsPort}:127.0.0.1 ${https(v.publicHost)}/_matrix/client/versions`,
    `  Element     ${https(v.element.host)}/  (Element ${v.element.version}${element.signed ? ', the local stand-in' : ''}; homeserver ${v.publicBaseUrl})`,
    `  admin       @${ADMIN_USER}:${v.serverName} (user name ${ADMIN_USER}), password in ${shown(passwordFile)}${admin.created ? ' (new)' : ''}`,
    `  ssh         ${sshCommand(s)}`,
    `  inventory   provision --inventory ${shown(s.inventory)} --dry-run`,
    `  remove      provision sandbox --down   (npm run sandbox -- --down)`,
    '',
  ]
  o.io.out(lines.join('\n'))
  return 0
}

function sshCommand(s: SandboxSettings): string {
  return `ssh -i ${shown(join(s.dir, 'id_ed25519'))} -o UserKnownHostsFile=${shown(join(s.dir, 'known_hosts'))} -p ${s.sshPort} root@127.0.0.1`
}

async function down(s: SandboxSettings, say: (line: string) => void): Promise<number> {
  await removeContainer(s, say)
  if (!existsSync(s.dir)) say(`${shown(s.dir)}: none`)
  else if (!existsSync(join(s.dir, MARKER)))
    throw new SandboxError(`${s.dir} was not made by provision sandbox (no ${MARKER} in it); not removing it`, 2)
  else {
    await rm(s.dir, { recursive: true, force: true })
    say(`${shown(s.dir)}: removed (${shown(s.cacheDir)} with the wheelhouse and Element is kept)`)
  }
  return 0
}
