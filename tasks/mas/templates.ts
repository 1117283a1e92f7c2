/**
 * The Matrix Authentication Service's files: config.yaml from the inventory and its hardened unit.
 * Keys and behaviour from MAS v1.22.0 (docs/reference/configuration.md, crates/config) as run in
 * /work/notes/research-24.md: every share/ path is absolute, so `mas-cli` works from any directory.
 */
import { createHash } from 'node:crypto'
import { stringify } from 'yaml'
import type { MatrixSettings } from '../../src/inventory/types.js'
import { MAS_DATABASE, MAS_DB_USER } from '../../src/synapse/paths.js'
import type { RenderedFile } from '../common/rendered-file.js'

export const MAS_USER = 'matrix-auth'
export const MAS_ROOT = '/opt/matrix-authentication-service'
export const MAS_CURRENT = `${MAS_ROOT}/current`
export const MAS_CLI = `${MAS_CURRENT}/mas-cli`
export const MAS_ETC = '/etc/matrix-authentication-service'
export const MAS_CONFIG = `${MAS_ETC}/config.yaml`
export const MAS_ENCRYPTION_KEY = `${MAS_ETC}/encryption-key`
export const MAS_SYNAPSE_SECRET = `${MAS_ETC}/synapse-secret`
export const MAS_KEYS_DIR = `${MAS_ETC}/keys`
/** The secret of the static OAuth client that may use MAS's admin API (provision mas-user; loopback only). */
export const MAS_ADMIN_CLIENT_SECRET = `${MAS_ETC}/admin-client-secret`
/** Its client id: MAS wants a ULID (26 Crockford base-32 characters). */
export const MAS_ADMIN_CLIENT_ID = '01JPR0V1S10N0000000000ADM1'
/** One RSA key (required) and one P-256 key, made with openssl on the host once. */
export const MAS_SIGNING_KEYS = [`${MAS_KEYS_DIR}/rsa.pem`, `${MAS_KEYS_DIR}/ec-p256.pem`] as const
export const MAS_UNIT = 'matrix-authentication-service.service'
export const MAS_UNIT_PATH = `/etc/systemd/system/${MAS_UNIT}`

/** The issuer: MAS on its own host name (MAS's documented default), behind Apache's https port. */
export function masPublicBase(vars: MatrixSettings): string {
  const port = vars.apache.httpsPort === 443 ? '' : `:${vars.apache.httpsPort}`
  return `https://${vars.mas.host}${port}/`
}

/**
 * MAS's encryption key: exactly 64 hex digits, no newline (MAS refuses anything else: "Odd number of
 * digits"). Derived from the generated secret so the stored secret stays the one source and never changes.
 */
export function masEncryptionKeyHex(secret: string): string {
  return createHash('sha256').update(`matrix-provision mas encryption key\0${secret}`).digest('hex')
}

/** Registration policy -> MAS's account settings. Without SMTP no verification mail arrives: no e-mail required. */
export function registrationSettings(policy: MatrixSettings['mas']['registration']) {
  return {
    password_registration_enabled: policy !== 'closed',
    password_registration_email_required: false,
    password_registration_token_required: policy === 'token',
  }
}

export function renderMasConfig(vars: MatrixSettings, ctx: { databaseHost: string; databasePassword: string }): RenderedFile {
  const share = `${MAS_CURRENT}/share`
  const limit = { burst: vars.mas.loginRateLimit.burst, per_second: vars.mas.loginRateLimit.perSecond }
  const config = {
    http: {
      public_base: masPublicBase(vars),
      listeners: [
        {
          name: 'web',
          resources: [
            { name: 'discovery' },
            { name: 'human' },
            { name: 'oauth' },
            { name: 'compat' },
            { name: 'graphql' },
            { name: 'assets', path: `${share}/assets/` },
          ],
          binds: [{ host: '127.0.0.1', port: vars.mas.port }],
        },
        // Loopback only: /health, and the admin API that provision mas-user calls on the host.
        {
          name: 'internal',
          resources: [{ name: 'health' }, { name: 'adminapi' }],
          binds: [{ host: '127.0.0.1', port: vars.mas.healthPort }],
        },
      ],
    },
    database: {
      host: ctx.databaseHost,
      port: vars.postgres.port,
      username: MAS_DB_USER,
      password: ctx.databasePassword,
      database: MAS_DATABASE,
    },
    matrix: {
      kind: 'synapse',
      // Must equal Synapse's server_name; MAS calls /_synapse/mas/* on the main process directly.
      homeserver: vars.serverName,
      endpoint: `http://127.0.0.1:${vars.synapse.listenPort}/`,
      secret_file: MAS_SYNAPSE_SECRET,
    },
    clients: [{ client_id: MAS_ADMIN_CLIENT_ID, client_auth_method: 'client_secret_basic', client_secret_file: MAS_ADMIN_CLIENT_SECRET }],
    secrets: { encryption_file: MAS_ENCRYPTION_KEY, keys: MAS_SIGNING_KEYS.map((key_file) => ({ key_file })) },
    passwords: {
      enabled: true,
      // v1 bcrypt + NFKC is what syn2mas needs for Synapse's hashes; the highest version hashes new passwords.
      // The same schemes on fresh servers, so that a later migration never changes this file.
      schemes: [
        { version: 1, algorithm: 'bcrypt', unicode_normalization: true },
        { version: 2, algorithm: 'argon2id' },
      ],
    },
    account: registrationSettings(vars.mas.registration),
    email: { transport: 'blackhole' },
    rate_limiting: { login: { per_ip: limit, per_account: { ...limit } } },
    templates: { path: `${share}/templates/`, assets_manifest: `${share}/manifest.json`, translations_path: `${share}/translations/` },
    policy: { wasm_module: `${share}/policy.wasm`, data: { admin_clients: [MAS_ADMIN_CLIENT_ID] } },
  }
  const content =
    '# Managed by matrix-provision (role mas): changes here are overwritten on the next run.\n' + stringify(config, { lineWidth: 0 })
  return { path: MAS_CONFIG, content, mode: 0o640, owner: 'root', group: MAS_USER, sensitive: true }
}

export function renderMasUnit(): string {
  return `# Managed by matrix-provision (role mas).
[Unit]
Description=Matrix Authentication Service
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
# MAS says READY=1 once its listeners are up. SIGHUP reloads templates only: config changes restart it.
Type=notify
User=${MAS_USER}
Group=${MAS_USER}
WorkingDirectory=${MAS_CURRENT}
ExecStart=${MAS_CLI} server --config ${MAS_CONFIG}
Restart=on-failure
RestartSec=5
TimeoutStartSec=120
Environment=RUST_LOG=info RUST_BACKTRACE=0

NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0077
# Not MemoryDenyWriteExecute: the policy (policy.wasm) runs in wasmtime, which compiles to machine code.

[Install]
WantedBy=multi-user.target
`
}
