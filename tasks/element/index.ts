import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import type { Task, TaskContext } from '../../src/engine/task.js'
import { command } from '../../src/resources/command.js'
import { directory, file, symlink } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { raw, sh, type ShellCommand } from '../../src/core/shell.js'
import { curlVhost, enabled, fileFrom, tlsFiles } from '../apache/index.js'
import { renderElementVhost } from '../apache/templates.js'
import { fetchTo, verifiedTarball, type TarballCheck } from '../common/release-tarball.js'
import { renderElementConfig } from './templates.js'

const CACHE = '/var/cache/matrix-provision/element'
export const WEBROOT = '/var/www/element'

export function elementVersionTag(ctx: TaskContext): string {
  const v = ctx.host.vars.element.version
  return v.startsWith('v') ? v : `v${v}`
}

/** Where a release comes from: an uploaded controller file, or a URL the host downloads. */
function sources(ctx: TaskContext) {
  const e = ctx.host.vars.element
  const tag = elementVersionTag(ctx)
  const tarball = `${CACHE}/element-${tag}.tar.gz`
  const url = e.url ?? `https://github.com/element-hq/element-web/releases/download/${tag}/element-${tag}.tar.gz`
  return {
    tarball,
    signature: `${tarball}.asc`,
    key: `${CACHE}/element-release-key.asc`,
    url,
    sigUrl: e.signatureUrl ?? (e.url ? undefined : `${url}.asc`),
  }
}

export const elementTask: Task = {
  name: 'element',
  title: 'Element Web: verified release, versioned directory, atomic switch, own vhost',
  before(ctx) {
    const e = ctx.host.vars.element
    return [
      {
        name: 'release can be verified',
        evaluate: () =>
          e.sha256 || ((e.signatureFile || e.signatureUrl || !e.url) && e.releaseKeyFile)
            ? { ok: true, detail: [e.sha256 && 'SHA-256', e.releaseKeyFile && 'GPG signature'].filter(Boolean).join(' and ') }
            : {
                ok: false,
                detail:
                  'element needs sha256, or releaseKeyFile with a signature (signatureFile or signatureUrl): nothing is unpacked unverified',
              },
      },
      {
        name: 'Apache on the same host',
        evaluate: () =>
          ctx.host.roles.includes('apache')
            ? { ok: true, detail: 'yes' }
            : { ok: false, detail: 'the element role needs the apache role on the same host (Element is served by its vhost)' },
      },
    ]
  },
  resources(ctx) {
    const e = ctx.host.vars.element
    const tag = elementVersionTag(ctx)
    const src = sources(ctx)
    const dir = `${WEBROOT}/element-${tag}`
    const out: Resource[] = [directory({ path: '/var/cache/matrix-provision' }), directory({ path: CACHE }), directory({ path: WEBROOT })]
    if (e.file) out.push(file({ path: src.tarball, content: readFileSync(e.file), mode: 0o644 }))
    if (e.releaseKeyFile) out.push(file({ path: src.key, content: readFileSync(e.releaseKeyFile), mode: 0o644 }))
    if (e.signatureFile) out.push(file({ path: src.signature, content: readFileSync(e.signatureFile), mode: 0o644 }))
    const checks: TarballCheck[] = [
      ...(e.sha256
        ? [
            {
              test: sh`echo ${`${e.sha256}  ${src.tarball}`} | sha256sum -c --quiet`,
              failure: `SHA-256 of ${basename(src.tarball)} is not ${e.sha256}`,
            },
          ]
        : []),
      // A throw-away keyring ("$g") holding only the release key: the signature must come from that key.
      ...(e.releaseKeyFile
        ? [
            {
              test: sh`gpg --batch -q --homedir "$g" --verify ${src.signature} ${src.tarball}`,
              failure: `GPG signature of ${basename(src.tarball)} does not verify with the release key`,
            },
          ]
        : []),
    ]
    // What this host downloads (uploaded files are resources above).
    const fetch: ShellCommand[] = [
      ...(!e.file ? [fetchTo(src.url, src.tarball, 300)] : []),
      ...(!e.signatureFile && e.releaseKeyFile && src.sigUrl ? [fetchTo(src.sigUrl, src.signature, 60)] : []),
    ]
    const verifyOrFetch = verifiedTarball(src.tarball, checks, fetch)
    const importKey = e.releaseKeyFile ? sh`g=$(mktemp -d); gpg --batch -q --homedir "$g" --import ${src.key} 2>/dev/null; ` : raw``
    out.push(
      command({
        name: `unpack element ${tag}`,
        summary: `verify (${[e.sha256 && 'SHA-256', e.releaseKeyFile && 'GPG'].filter(Boolean).join(' + ')}) and unpack element-${tag} into ${dir}${e.file ? '' : ' (a cached download that does not verify is fetched again)'}`,
        creates: `${dir}/index.html`,
        command: sh`set -e; t=''; g=''; trap 'rm -rf "$g" "$t"' EXIT; ${importKey}${verifyOrFetch}; t=$(mktemp -d ${`${WEBROOT}/.unpack-XXXXXX`}); tar -xzf ${src.tarball} -C "$t" --no-same-owner; [ -f "$t"/${`element-${tag}/index.html`} ] || { echo ${`the tarball has no element-${tag}/index.html`} >&2; exit 1; }; chmod -R u=rwX,go=rX "$t"/${`element-${tag}`}; rm -rf ${dir}; mv "$t"/${`element-${tag}`} ${dir}; rm -rf "$t"`,
        touches: [dir + '/'],
        timeoutMs: 600_000,
      }),
      file({ path: `${dir}/config.json`, content: renderElementConfig(ctx.host.vars), mode: 0o644 }),
      // The switch to a new version is one rename: visitors never see a half-unpacked release.
      symlink({ path: `${WEBROOT}/current`, target: `element-${tag}` }),
    )
    const vhost = renderElementVhost(ctx.host.vars, tlsFiles(ctx.host.vars))
    out.push(fileFrom(vhost), enabled(vhost.path))
    return out
  },
  after(ctx) {
    const e = ctx.host.vars.element
    return [
      {
        name: `Element index.html and config.json served on ${e.host}`,
        async run(conn) {
          const index = await curlVhost(conn, ctx, e.host, '/index.html', { headers: true })
          if (!index.ok) return { ok: false, detail: index.detail }
          if (!/x-frame-options: SAMEORIGIN/i.test(index.body)) return { ok: false, detail: 'index.html lacks X-Frame-Options' }
          const config = await curlVhost(conn, ctx, e.host, '/config.json')
          if (!config.ok) return { ok: false, detail: config.detail }
          const base = (JSON.parse(config.body) as { default_server_config?: { 'm.homeserver'?: { base_url?: string } } })
            .default_server_config?.['m.homeserver']?.base_url
          return base === ctx.host.vars.publicBaseUrl.replace(/\/+$/, '')
            ? { ok: true, detail: `config.json points at ${base}` }
            : { ok: false, detail: `config.json base_url is ${base}` }
        },
      },
    ]
  },
}
