import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { withCacheLock } from './cache-lock.js'
import { createEphemeralSigningKey, verifyDetachedSignature } from './gpg.js'
import { controller$ } from './controller-shell.js'

/**
 * A local stand-in for an Element Web GitHub release (GitHub is unreachable from the build machine):
 * same names and layout as upstream's scripts/package.sh, i.e. `element-v<version>.tar.gz` unpacking
 * to `element-v<version>/` with index.html, config.sample.json, version, i18n/, bundles/<hash>/,
 * plus `element-v<version>.tar.gz.asc` signed by a locally generated key published as
 * `element-release-key.asc` (upstream: packages.element.io/element-release-key.asc).
 */
export interface ElementRelease {
  tarball: string
  sha256: string
  /** Path of the detached armored signature. */
  signature: string
  /** Path of the armored public release key. */
  releaseKey: string
  /** Fingerprint of the release key, to pin on the host. */
  fingerprint: string
  /** Directory name inside the tarball: `element-v<version>`. */
  topDir: string
}

/** Element tags are `vX.Y.Z`; the `version` file inside holds `X.Y.Z` (upstream normalize-version.sh). */
export function normalizeElementVersion(version: string): string {
  const bare = version.replace(/^v/, '')
  if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(bare)) throw new Error(`not an Element version: ${version}`)
  return bare
}

/** The files of the release, relative to `element-v<version>/`. Pure: the same version gives the same bytes. */
export function elementStandinFiles(version: string): Map<string, string> {
  const bare = normalizeElementVersion(version)
  const appJs = [
    `// matrix-provision stand-in for Element Web v${bare}: not the real client.`,
    `window.ELEMENT_VERSION = ${JSON.stringify(bare)};`,
    'fetch("config.json", { cache: "no-cache" })',
    '  .then((r) => (r.ok ? r.json() : Promise.reject(new Error("config.json: HTTP " + r.status))))',
    '  .then((config) => {',
    '    const hs = config.default_server_config && config.default_server_config["m.homeserver"];',
    '    document.getElementById("homeserver").textContent = hs ? hs.base_url : "(no default_server_config)";',
    '    document.body.dataset.configLoaded = "true";',
    '  })',
    '  .catch((e) => { document.getElementById("homeserver").textContent = "config error: " + e.message; });',
    '',
  ].join('\n')
  const bundle = createHash('sha256').update(appJs).digest('hex').slice(0, 20)
  const indexHtml = [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '  <meta charset="utf-8">',
    `  <title>Element</title>`,
    `  <meta name="element-version" content="${bare}">`,
    '</head>',
    '<body>',
    `  <h1>Element ${bare} (matrix-provision stand-in)</h1>`,
    '  <p>Homeserver: <span id="homeserver">loading config.json…</span></p>',
    `  <script src="bundles/${bundle}/app.js"></script>`,
    '</body>',
    '</html>',
    '',
  ].join('\n')
  const configSample = {
    default_server_config: {
      'm.homeserver': { base_url: 'https://matrix-client.matrix.org', server_name: 'matrix.org' },
      'm.identity_server': { base_url: 'https://vector.im' },
    },
    disable_custom_urls: false,
    disable_guests: false,
    disable_login_language_selector: false,
    disable_3pid_login: false,
    brand: 'Element',
    integrations_ui_url: 'https://scalar.vector.im/',
    integrations_rest_url: 'https://scalar.vector.im/api',
    integrations_widgets_urls: ['https://scalar.vector.im/_matrix/integrations/v1'],
    default_country_code: 'GB',
    show_labs_settings: false,
    features: {},
    default_federate: true,
    default_theme: 'light',
    room_directory: { servers: ['matrix.org'] },
    setting_defaults: { breadcrumbs: true },
    jitsi: { preferred_domain: 'meet.element.io' },
    element_call: { url: 'https://call.element.io', participant_limit: 8, brand: 'Element Call' },
    map_style_url: 'https://api.maptiler.com/maps/streets/style.json',
  }
  const i18n = { 'Welcome to Element': 'Welcome to Element', Homeserver: 'Homeserver' }
  return new Map([
    ['index.html', indexHtml],
    ['config.sample.json', JSON.stringify(configSample, null, 4) + '\n'],
    ['version', `${bare}\n`],
    ['i18n/en_EN.json', JSON.stringify(i18n, null, 4) + '\n'],
    [`bundles/${bundle}/app.js`, appJs],
  ])
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  )
const sha256File = async (path: string) =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex')

/**
 * Builds (or reuses) the signed stand-in release in `dir`. Reuse: when tarball, signature and key are
 * there and the signature verifies with that key, nothing is rebuilt (a new key on every run would make
 * the host's pinned key churn). The tarball is deterministic: sorted entries, fixed mtime, root owner,
 * gzip without name or time, so the same version always gives the same sha256.
 */
export async function buildElementStandin(opts: { version: string; dir: string }): Promise<ElementRelease> {
  const bare = normalizeElementVersion(opts.version)
  const topDir = `element-v${bare}`
  const tarball = join(opts.dir, `${topDir}.tar.gz`)
  const signature = `${tarball}.asc`
  const releaseKey = join(opts.dir, 'element-release-key.asc')
  await mkdir(opts.dir, { recursive: true })
  const built = async (): Promise<ElementRelease | undefined> => {
    if (!(await exists(tarball)) || !(await exists(signature)) || !(await exists(releaseKey))) return undefined
    const check = await verifyDetachedSignature({ publicKey: releaseKey, signature, file: tarball })
    if (check.ok && check.signer)
      return { tarball, sha256: await sha256File(tarball), signature, releaseKey, fingerprint: check.signer, topDir }
    return undefined
  }
  // Each build signs with a key of its own: two at once would leave one's signature beside the other's key.
  return (await built()) ?? (await withCacheLock(join(opts.dir, `.${topDir}.lock`), async () => (await built()) ?? (await writeStandin())))

  async function writeStandin(): Promise<ElementRelease> {
    const staging = await mkdtemp(join(opts.dir, '.staging-'))
    try {
      for (const [path, content] of elementStandinFiles(bare)) {
        const target = join(staging, topDir, path)
        await mkdir(dirname(target), { recursive: true })
        await writeFile(target, content, { mode: 0o644 })
      }
      const tarPath = join(staging, 'release.tar')
      const $ = await controller$()
      await $`tar ${['--sort=name', '--mtime=@1700000000', '--owner=0', '--group=0', '--numeric-owner', '--mode=u+rwX,go+rX,go-w', '--format=gnu']} -C ${staging} -cf ${tarPath} ${topDir}`
      await writeFile(tarball, gzipSync(await readFile(tarPath), { level: 9 }))

      const key = await createEphemeralSigningKey(
        `Element stand-in release key (matrix-provision test) <element-release@matrix-provision.invalid>`,
      )
      try {
        await key.signDetachedArmored(tarball, signature)
        await key.exportArmored(releaseKey)
        return { tarball, sha256: await sha256File(tarball), signature, releaseKey, fingerprint: key.fingerprint, topDir }
      } finally {
        await key.dispose()
      }
    } finally {
      await rm(staging, { recursive: true, force: true })
    }
  }
}
