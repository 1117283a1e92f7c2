import { describe, expect, it } from 'vitest'
import {
  APACHE_MODULES,
  renderElementVhost,
  renderMatrixVhost,
  renderPortsConf,
  renderServerNameVhost,
  wellKnownClient,
  wellKnownServer,
} from '../../tasks/apache/templates.js'
import { proxyPassMatchPattern } from '../../tasks/apache/proxy.js'
import { FEDERATION_ROUTES } from '../../src/synapse/routes.js'
import { matrixSettings } from './fixtures/matrix-settings.js'
import type { ClientDiscoveryJson } from './fixtures/rendered.js'

const TLS = { certFile: '/etc/ssl/matrix/fullchain.pem', keyFile: '/etc/ssl/matrix/privkey.pem' }
const lines = (content: string) => content.split('\n').map((l) => l.trim())

describe('renderMatrixVhost', () => {
  const vhost = renderMatrixVhost(matrixSettings(), { ...TLS, workers: true })
  const l = lines(vhost.content)

  it('is the upstream reverse-proxy vhost on publicHost:443 with TLS', () => {
    expect(vhost.path).toBe('/etc/apache2/sites-available/matrix.conf')
    expect(vhost).toMatchObject({ owner: 'root', group: 'root', mode: 0o644, sensitive: false })
    for (const line of [
      '<VirtualHost *:443>',
      'ServerName matrix.example.org',
      'SSLEngine on',
      'SSLCertificateFile "/etc/ssl/matrix/fullchain.pem"',
      'SSLCertificateKeyFile "/etc/ssl/matrix/privkey.pem"',
      'RequestHeader set "X-Forwarded-Proto" expr=%{REQUEST_SCHEME}',
      'AllowEncodedSlashes NoDecode',
      'ProxyPreserveHost on',
      'ProxyPass /_matrix http://127.0.0.1:8008/_matrix nocanon',
      'ProxyPassReverse /_matrix http://127.0.0.1:8008/_matrix',
      'ProxyPass /_synapse/client http://127.0.0.1:8008/_synapse/client nocanon',
      'ProxyPassReverse /_synapse/client http://127.0.0.1:8008/_synapse/client',
      '<IfModule security2_module>',
      'SecRuleEngine off',
    ]) {
      expect(l, line).toContain(line)
    }
  })

  it('redirects http to https', () => {
    expect(l).toContain('<VirtualHost *:80>')
    expect(l).toContain('Redirect permanent / https://matrix.example.org/')
  })

  it('routes every federation reader route with ProxyPassMatch before the generic /_matrix line', () => {
    const generic = l.indexOf('ProxyPass /_matrix http://127.0.0.1:8008/_matrix nocanon')
    // The federation reader's routes; the long-polls go to main's capped pool (test/unit/topology.test.ts).
    const matches = l.filter((x) => x.startsWith('ProxyPassMatch ') && !x.includes('"balancer://long-polls-main$1"'))
    expect(matches).toHaveLength(FEDERATION_ROUTES.length)
    for (const route of FEDERATION_ROUTES) {
      const line = `ProxyPassMatch "${proxyPassMatchPattern(route)}" "http://127.0.0.1:32902$1" nocanon`
      expect(l.indexOf(line), line).toBeGreaterThan(-1)
      expect(l.indexOf(line)).toBeLessThan(generic)
    }
    expect(matches[0]).toBe('ProxyPassMatch "^(/_matrix/federation/v1/version(?:\\?.*)?)$" "http://127.0.0.1:32902$1" nocanon')
    expect(l).toContain('ProxyPassMatch "^(/_matrix/federation/v1/send/.*)$" "http://127.0.0.1:32902$1" nocanon')
  })

  it('sets nocanon on every ProxyPass and ProxyPassMatch', () => {
    for (const x of l.filter((x) => /^ProxyPass(Match)? /.test(x))) expect(x.endsWith(' nocanon'), x).toBe(true)
  })

  it('has no worker routes without workers: only the long-polls, to main through the capped pool', () => {
    const plain = renderMatrixVhost(matrixSettings(), { ...TLS, workers: false }).content
    const matches = plain.split('\n').filter((x) => x.trim().startsWith('ProxyPassMatch '))
    expect(matches).toHaveLength(5)
    for (const m of matches) expect(m).toContain('"balancer://long-polls-main$1" nocanon')
    expect(plain).toContain('ProxyPass /_matrix http://127.0.0.1:8008/_matrix nocanon')
  })

  it('uses a non-default https port everywhere', () => {
    const vars = matrixSettings({ apache: { httpsPort: 8443 } })
    const x = lines(renderMatrixVhost(vars, { ...TLS, workers: false }).content)
    expect(x).toContain('<VirtualHost *:8443>')
    expect(x).toContain('Redirect permanent / https://matrix.example.org:8443/')
    expect(renderPortsConf(vars).content).toContain('Listen 8443 https\n')
    expect(JSON.parse(wellKnownServer(vars))).toEqual({ 'm.server': 'matrix.example.org:8443' })
  })

  it('serves ACME challenges over http instead of redirecting them', () => {
    const x = renderMatrixVhost(matrixSettings({ apache: { tls: { mode: 'acme' } } }), { ...TLS, workers: false }).content
    expect(x).toContain('Alias /.well-known/acme-challenge/ "/var/www/acme/.well-known/acme-challenge/"')
    expect(x).toContain('RedirectMatch permanent "^/(?!\\.well-known/acme-challenge/)(.*)$" "https://matrix.example.org/$1"')
    const re = new RegExp('^/(?!\\.well-known/acme-challenge/)(.*)$')
    expect(re.test('/.well-known/acme-challenge/token')).toBe(false)
    expect(re.test('/_matrix/client/versions')).toBe(true)
  })

  it('serves the .well-known files itself when the server name is the public host', () => {
    const vars = matrixSettings({ serverName: 'matrix.example.org' })
    const x = renderMatrixVhost(vars, { ...TLS, workers: false }).content
    expect(x).toContain('Alias /.well-known/matrix "/var/www/matrix-well-known/.well-known/matrix"')
    expect(x).toContain('ForceType application/json')
    expect(renderServerNameVhost(vars, { ...TLS, workers: false }).map((f) => f.path)).toEqual([
      '/var/www/matrix-well-known/.well-known/matrix/server',
      '/var/www/matrix-well-known/.well-known/matrix/client',
    ])
  })
})

describe('proxyPassMatchPattern', () => {
  /** What mod_proxy does with nocanon: match the raw request line, send $1 on unchanged. */
  const target = (route: string, rawUri: string) => {
    const m = new RegExp(proxyPassMatchPattern(route)).exec(rawUri)
    return m ? `http://127.0.0.1:32902${m[1]}` : undefined
  }

  it('keeps the raw path and the query string', () => {
    expect(target('^/_matrix/federation/v1/send/', '/_matrix/federation/v1/send/txn%2F1?a=b')).toBe(
      'http://127.0.0.1:32902/_matrix/federation/v1/send/txn%2F1?a=b',
    )
    expect(target('^/_matrix/federation/(v1|v2)/send_join/', '/_matrix/federation/v2/send_join/!r:x/$e')).toBe(
      'http://127.0.0.1:32902/_matrix/federation/v2/send_join/!r:x/$e',
    )
    expect(target('^/_matrix/key/v2/query', '/_matrix/key/v2/query/example.org')).toBe(
      'http://127.0.0.1:32902/_matrix/key/v2/query/example.org',
    )
  })

  it('keeps anchored routes anchored, query string allowed', () => {
    expect(target('^/_matrix/federation/v1/version$', '/_matrix/federation/v1/version')).toBe(
      'http://127.0.0.1:32902/_matrix/federation/v1/version',
    )
    expect(target('^/_matrix/federation/v1/version$', '/_matrix/federation/v1/version?x=1')).toBe(
      'http://127.0.0.1:32902/_matrix/federation/v1/version?x=1',
    )
    expect(target('^/_matrix/federation/v1/version$', '/_matrix/federation/v1/versionx')).toBeUndefined()
  })

  it('matches no client or media path', () => {
    for (const uri of [
      '/_matrix/client/v3/sync',
      '/_matrix/media/v3/download/x/y',
      '/_matrix/federation/v1/media/download/x',
      '/_synapse/client/pick_idp',
    ]) {
      expect(FEDERATION_ROUTES.map((r) => target(r, uri)).filter(Boolean), uri).toEqual([])
    }
  })
})

describe('renderServerNameVhost', () => {
  it('well-known: serves valid JSON with the right values, as application/json with CORS', () => {
    const files = renderServerNameVhost(matrixSettings(), { ...TLS, workers: true })
    expect(files.map((f) => f.path)).toEqual([
      '/etc/apache2/sites-available/matrix-delegation.conf',
      '/var/www/matrix-well-known/.well-known/matrix/server',
      '/var/www/matrix-well-known/.well-known/matrix/client',
    ])
    expect(JSON.parse(files[1]!.content)).toEqual({ 'm.server': 'matrix.example.org:443' })
    expect(JSON.parse(files[2]!.content)).toEqual({ 'm.homeserver': { base_url: 'https://matrix.example.org' } })
    const l = lines(files[0]!.content)
    for (const line of [
      '<VirtualHost *:443>',
      'ServerName example.org',
      'SSLEngine on',
      'DocumentRoot "/var/www/matrix-well-known"',
      '<Directory "/var/www/matrix-well-known/.well-known/matrix">',
      'ForceType application/json',
      'Header set Access-Control-Allow-Origin "*"',
    ]) {
      expect(l, line).toContain(line)
    }
    expect(files[0]!.content).not.toContain('ProxyPass')
  })

  it('strips a trailing slash from the client base_url', () => {
    expect(JSON.parse(wellKnownClient(matrixSettings({ publicBaseUrl: 'https://matrix.example.org/' })))).toEqual({
      'm.homeserver': { base_url: 'https://matrix.example.org' },
    })
  })

  it('port-8448: proxies federation for the server name on 8448, worker routes first, and listens on 8448', () => {
    const vars = matrixSettings({ apache: { delegation: 'port-8448' } })
    const files = renderServerNameVhost(vars, { ...TLS, workers: true })
    expect(files).toHaveLength(1)
    const l = lines(files[0]!.content)
    expect(l).toContain('<VirtualHost *:8448>')
    expect(l).toContain('ServerName example.org')
    expect(l).toContain('AllowEncodedSlashes NoDecode')
    const generic = l.indexOf('ProxyPass /_matrix http://127.0.0.1:8008/_matrix nocanon')
    const lastMatch = l.map((x) => x.startsWith('ProxyPassMatch ')).lastIndexOf(true)
    expect(lastMatch).toBeGreaterThan(-1)
    expect(generic).toBeGreaterThan(lastMatch)
    expect(renderPortsConf(vars).content).toContain('Listen 8448 https\n')
  })
})

describe('renderElementVhost', () => {
  const vhost = renderElementVhost(matrixSettings(), TLS)
  const l = lines(vhost.content)

  it('serves /var/www/element/current on element.host with the security headers', () => {
    expect(vhost.path).toBe('/etc/apache2/sites-available/element.conf')
    for (const line of [
      'ServerName element.example.org',
      'DocumentRoot "/var/www/element/current"',
      'Header set X-Frame-Options SAMEORIGIN',
      'Header set X-Content-Type-Options nosniff',
      'Header set X-XSS-Protection "1; mode=block"',
      `Header set Content-Security-Policy "frame-ancestors 'self'"`,
      'Header set Cache-Control "no-cache"',
      'Redirect permanent / https://element.example.org/',
      // Element's own icons/, not Debian's server-wide Alias /icons/ (mods-enabled/alias.conf).
      'Alias /icons/ "/var/www/element/current/icons/"',
    ]) {
      expect(l, line).toContain(line)
    }
  })

  it('marks /, /index.html, /version, /config*.json and /i18n as no-cache, and nothing else', () => {
    const pattern = /<LocationMatch "([^"]+)">/.exec(vhost.content)![1]!
    const re = new RegExp(pattern)
    for (const path of ['/', '/index.html', '/version', '/config.json', '/config.element.example.org.json', '/i18n/de_DE.json'])
      expect(re.test(path), path).toBe(true)
    for (const path of ['/bundles/abc/app.js', '/img/logo.svg', '/index.htmlx', '/x/config.json']) expect(re.test(path), path).toBe(false)
  })

  it('refuses to share the homeserver host name', () => {
    expect(() => renderElementVhost(matrixSettings({ element: { host: 'matrix.example.org' } }), TLS)).toThrow(/XSS/)
  })
})

describe('renderPortsConf', () => {
  it('adds nothing for the defaults, but still renders the file', () => {
    const f = renderPortsConf(matrixSettings())
    expect(f.path).toBe('/etc/apache2/conf-available/matrix-ports.conf')
    expect(f.content).not.toMatch(/^Listen/m)
  })

  it('lists each extra port once', () => {
    const f = renderPortsConf(matrixSettings({ apache: { delegation: 'port-8448', httpsPort: 8448 } }))
    expect(f.content.match(/^Listen .*$/gm)).toEqual(['Listen 8448 https'])
  })
})

describe('APACHE_MODULES', () => {
  it('lists exactly the modules whose directives the vhosts use', () => {
    expect([...APACHE_MODULES].sort()).toEqual(['alias', 'headers', 'proxy', 'proxy_http', 'ssl'])
    const all = [
      renderMatrixVhost(matrixSettings({ apache: { tls: { mode: 'acme' } } }), { ...TLS, workers: true }).content,
      ...renderServerNameVhost(matrixSettings(), { ...TLS, workers: true }).map((f) => f.content),
      renderElementVhost(matrixSettings(), TLS).content,
    ].join('\n')
    expect(all).not.toMatch(/^\s*Rewrite/m)
    expect(all).toMatch(/^\s*SSLEngine on/m)
    expect(all).toMatch(/^\s*RequestHeader /m)
    expect(all).toMatch(/^\s*ProxyPassMatch /m)
    expect(all).toMatch(/^\s*RedirectMatch /m)
  })
})

describe('hostile values', () => {
  it('refuses file paths that could end the quoted string or expand variables', () => {
    for (const certFile of ['/etc/ssl/a"b.pem', '/etc/ssl/a\nSSLEngine off', '/etc/ssl/${HOME}.pem', 'relative.pem', '/etc/ssl/a\\"b']) {
      expect(() => renderMatrixVhost(matrixSettings(), { ...TLS, certFile, workers: false }), JSON.stringify(certFile)).toThrow(/certFile/)
    }
  })

  it('accepts paths with spaces, quoted', () => {
    const x = renderMatrixVhost(matrixSettings(), { ...TLS, certFile: '/etc/ssl/my certs/a.pem', workers: false }).content
    expect(x).toContain('SSLCertificateFile "/etc/ssl/my certs/a.pem"')
  })

  it('refuses host names that are not DNS names', () => {
    for (const publicHost of ['matrix.example.org\n<VirtualHost *:80>', 'Matrix.Example.org', 'a b', '']) {
      expect(() => renderMatrixVhost(matrixSettings({ publicHost }), { ...TLS, workers: false }), JSON.stringify(publicHost)).toThrow(
        /publicHost/,
      )
    }
  })

  it('writes JSON that stays JSON whatever the base URL holds', () => {
    const publicBaseUrl = 'https://matrix.example.org/"quoted"\\path'
    expect((JSON.parse(wellKnownClient(matrixSettings({ publicBaseUrl }))) as ClientDiscoveryJson)['m.homeserver']!.base_url).toBe(
      publicBaseUrl,
    )
  })
})
