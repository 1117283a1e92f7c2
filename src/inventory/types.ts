import type { SynapseLock } from '../synapse/lock/lock-file.js'
import type { SecretValue } from '../core/secret.js'
import type { SshHost } from '../ssh/settings.js'
import type { WorkerKindName } from '../synapse/worker-kinds.js'
import type { WorkerPreset } from '../synapse/worker-presets.js'

/** The roles a host can have; each names the task module that runs on it (tasks/<role>/). Order = run order. */
export const ROLES = ['apt-keyring', 'postgres', 'redis', 'synapse', 'workers', 'apache', 'element', 'monitoring', 'backup'] as const
export type Role = (typeof ROLES)[number]

/** An entry of `workers.instances` as written. */
export interface WorkerEntry {
  name: string
  kind: WorkerKindName
  port?: number
  replicationPort?: number
  metricsPort?: number
  /** Inventory host that runs it (default: the main process's host). */
  host?: string
}

export interface TlsSettings {
  /** self-signed: generated on the host once; files: certificate and key uploaded from the controller; acme: certbot. */
  mode: 'self-signed' | 'files' | 'acme'
  certificateFile?: string
  keyFile?: string
  acmeEmail?: string
  /** ACME directory URL; unset: Let's Encrypt's production directory (certbot's default). */
  acmeServer?: string
  /** Controller path of the CA bundle that signs a private ACME server's HTTPS certificate. */
  acmeCaFile?: string
}

export interface MatrixSettings {
  /** The part after the colon in user IDs: @alice:example.org */
  serverName: string
  /** Host name that serves the client and federation APIs (Apache vhost), e.g. matrix.example.org */
  publicHost: string
  /** https://<publicHost> unless given. */
  publicBaseUrl: string
  aptRepository: {
    url: string
    /** URL or controller path of the keyring (binary or armored). */
    keyringUrl?: string
    keyringFile?: string
    /** Expected key fingerprint; checked before the keyring is installed. */
    fingerprint?: string
    /** Suite; defaults to the host's codename. */
    suite?: string
    components: string[]
  }
  postgres: {
    /** Inventory name of the host running Postgres (defaults to the host with the postgres role, else this host). */
    host?: string
    port: number
    database: string
    user: string
    password: SecretValue
    /** PostgreSQL major version to install (the distribution's default when unset). */
    version?: number
    /** Inventory names of the hosts allowed to connect (derived from synapse/workers roles unless given). */
    allowFrom?: string[]
  }
  redis: {
    host?: string
    port: number
    password?: SecretValue
  }
  synapse: {
    install: 'apt' | 'pip'
    version?: string
    /** pip: index URL, or a wheelhouse directory on the controller that is uploaded (offline hosts). */
    pipIndexUrl?: string
    wheelhouse?: string
    /** pip: the directory of lock files (default synapse-lock/ beside the inventory). */
    lockDir: string
    /** pip: the locked dependency set of `version`, read and validated when the inventory is loaded. */
    lock?: SynapseLock
    listenPort: number
    enableRegistration: boolean
    reportStats: boolean
    cacheFactor: number
    /** Extra CA certificates (controller paths) trusted for federation: federation_custom_ca_list. */
    federationCaFiles: string[]
    /** Keys under conf.d/ the user wants to add verbatim (merged last). */
    extraConfig: Record<string, unknown>
    /** Unset: the package layout's path; an adopted host keeps its own (recorded on the host). */
    signingKeyPath?: string
    mediaStorePath?: string
    /**
     * The server's signing key (the file's content, `ed25519 a_XXXX <base64>`): unset, Synapse
     * generates it on the main host; set, every host of the homeserver gets this one.
     */
    signingKey?: SecretValue
    macaroonSecret: SecretValue
    formSecret: SecretValue
    registrationSharedSecret: SecretValue
    /** pip: versioned venvs kept after an upgrade, the active one included. */
    keepVenvs: number
    /** Host directory of the database dumps taken before schema migrations. */
    backupDir: string
  }
  workers: {
    enabled: boolean
    /** The worker set: a preset (guide when nothing is said), or the explicit `instances` list. */
    preset?: WorkerPreset
    instances?: WorkerEntry[]
    /** Which host runs which workers, by worker name or kind (default: the main process's host). */
    placement?: Record<string, string>
    /** Resolved by the loader: the inventory host of the main process (on a worker host too). */
    homeserverHost?: string
    /** Resolved by the loader: the private address of each host of the homeserver (main and worker hosts). */
    addresses?: Record<string, string>
    /** First automatic port: http portBase+i, replication +100+i, metrics +200+i (inventory/workers.ts). */
    portBase: number
    replicationPort: number
    replicationSecret: SecretValue
    federationReader: { port: number; metricsPort: number }
    federationSender: { metricsPort: number }
  }
  apache: {
    tls: TlsSettings
    /** well-known: serve /.well-known/matrix/* on the server name's vhost. port-8448: federation vhost on 8448. */
    delegation: 'well-known' | 'port-8448'
    httpsPort: number
    /** Concurrent requests (long-polls) Apache's mpm_event holds: tasks/apache/mpm.ts. */
    maxClients: number
  }
  element: {
    enabled: boolean
    version: string
    /** Host name of Element's own vhost (never the homeserver's: XSS). */
    host: string
    /** Download URL (default: GitHub release of `version`) or a controller file uploaded to the host. */
    url?: string
    file?: string
    sha256?: string
    /** Detached signature (controller path or URL) and the release key (controller path) to verify it. */
    signatureFile?: string
    signatureUrl?: string
    releaseKeyFile?: string
  }
  monitoring: {
    enableMetrics: boolean
    mainMetricsPort: number
    /** Write a Prometheus scrape configuration here on the host (none when unset). */
    prometheusScrapeFile?: string
    prometheus: PrometheusSettings
  }
  /** Scheduled backups on the host (role backup): a systemd timer taking the parts `provision backup` takes. */
  backup: {
    /** Directory on the host; each backup is a subdirectory <host>-<UTC time>. */
    directory: string
    /** Backups kept; older ones are removed after a new one is complete. */
    keep: number
    /** systemd OnCalendar expression (default daily). */
    onCalendar: string
    /** A backup is not started when less than this much would stay free after it (MiB). */
    minFreeMiB: number
  }
}

/** Prometheus on the Synapse host (loopback only). Durations in Prometheus's notation ("15s", "15d"). */
export interface PrometheusSettings {
  enabled: boolean
  port: number
  nodeExporterPort: number
  retention: string
  retentionSize?: string
  scrapeInterval: string
  /** How long a process must be down before the SynapseProcessDown alert fires. */
  processDownFor: string
}

export interface HostSpec extends SshHost {
  /** Address other hosts use to reach this one (pg_hba, Redis bind); defaults to `address`. */
  privateAddress: string
  roles: Role[]
  vars: MatrixSettings
}

export interface Inventory {
  /** Path of the inventory file (for messages). */
  file: string
  hosts: HostSpec[]
}
