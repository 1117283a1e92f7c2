/**
 * Which request paths each kind of Synapse process can serve, per Synapse version: the reverse
 * proxy's routing table. Transcribed from docs/workers.md of the release sdist (1.163.2:
 * `pip download --no-deps --no-binary :all: matrix-synapse==1.163.2`), "synapse.app.generic_worker",
 * "Stream writers" and "synapse.app.media_repository". An upgrade that changes the documented routes
 * adds an entry to ROUTE_TABLES (with the version it starts at), so the routes follow the installed
 * Synapse: `routeTable(version)`.
 *
 * Every regex starts with ^; prefix routes match anything after them, routes ending in $ may be
 * followed by a query string (see proxyPassMatchPattern in tasks/apache/templates.ts).
 */
import { compareVersions } from './compat.js'

/** Streams a worker can write (synapse/config/workers.py `WriterLocations`). */
export const STREAMS = [
  'events',
  'typing',
  'to_device',
  'account_data',
  'receipts',
  'presence',
  'push_rules',
  'device_lists',
  'thread_subscriptions',
  'quarantined_media_changes',
] as const
export type Stream = (typeof STREAMS)[number]

/** Groups of generic_worker routes, so pools can take a part of them (specialized workers). */
export interface GenericRoutes {
  sync: readonly string[]
  /** Federation requests and inbound transactions (`^/_matrix/federation/v1/send/` last). */
  federation: readonly string[]
  /** Client reads and requests any generic worker serves (includes encryption and login). */
  client: readonly string[]
  /** Event sending (docs: balanced by room ID or round robin). */
  eventSending: readonly string[]
  userDirectory: readonly string[]
}

export interface RouteTable {
  /** First Synapse version these routes hold for. */
  since: string
  generic: GenericRoutes
  /** Routes of each stream's writer; a stream missing here has no documented endpoints. */
  streams: Partial<Record<Stream, readonly string[]>>
  /** Streams the version has (older releases lack the newer ones; Synapse rejects unknown ones). */
  knownStreams: readonly Stream[]
  media: readonly string[]
}

const CLIENT = '^/_matrix/client'
const V = '(api/v1|r0|v3|unstable)'
const V3 = '(r0|v3|unstable)'

/**
 * Federation endpoints a generic worker serves (the guide's federation_reader list, today's form; docs/workers.md,
 * "synapse.app.generic_worker"). Compared with the guide (2022): adds version, make_knock/send_knock,
 * timestamp_to_event, hierarchy; drops get_groups_publicised (groups were removed) and query_auth; v1|v2 pairs are
 * one regex each. Federation media belongs to a media_repository worker.
 */
export const FEDERATION_ROUTES: readonly string[] = [
  '^/_matrix/federation/v1/version$',
  '^/_matrix/federation/v1/event/',
  '^/_matrix/federation/v1/state/',
  '^/_matrix/federation/v1/state_ids/',
  '^/_matrix/federation/v1/backfill/',
  '^/_matrix/federation/v1/get_missing_events/',
  '^/_matrix/federation/v1/publicRooms',
  '^/_matrix/federation/v1/query/',
  '^/_matrix/federation/v1/make_join/',
  '^/_matrix/federation/v1/make_leave/',
  '^/_matrix/federation/(v1|v2)/send_join/',
  '^/_matrix/federation/(v1|v2)/send_leave/',
  '^/_matrix/federation/v1/make_knock/',
  '^/_matrix/federation/v1/send_knock/',
  '^/_matrix/federation/(v1|v2)/invite/',
  '^/_matrix/federation/v1/event_auth/',
  '^/_matrix/federation/v1/timestamp_to_event/',
  '^/_matrix/federation/v1/exchange_third_party_invite/',
  '^/_matrix/federation/v1/user/devices/',
  '^/_matrix/key/v2/query',
  '^/_matrix/federation/v1/hierarchy/',
  // Inbound federation transactions.
  '^/_matrix/federation/v1/send/',
]

/**
 * With the Matrix Authentication Service, its compatibility layer answers the old login API (MAS docs,
 * setup/reverse-proxy.md: /_matrix/client/(version)/login, logout, refresh, with /login/sso/redirect and /logout/all);
 * Synapse and its workers answer them 404. These go to MAS before any worker route.
 */
export const MAS_COMPAT_ROUTES: readonly string[] = [`${CLIENT}/${V}/(login|logout|refresh)(/|$)`]

const SYNC_ROUTES = [
  `${CLIENT}/(r0|v3)/sync$`,
  `${CLIENT}/(api/v1|r0|v3)/events$`,
  `${CLIENT}/(api/v1|r0|v3)/initialSync$`,
  `${CLIENT}/(api/v1|r0|v3)/rooms/[^/]+/initialSync$`,
  // Simplified sliding sync (Element X). Not in docs/workers.md, but sync.register_servlets registers
  // SlidingSyncRestServlet on every generic_worker (synapse/rest/__init__.py), as both anchors route it.
  `${CLIENT}/unstable/org.matrix.simplified_msc3575/sync$`,
]

const CLIENT_ROUTES = [
  `${CLIENT}/${V}/createRoom$`,
  `${CLIENT}/${V}/publicRooms$`,
  `${CLIENT}/${V}/rooms/.*/joined_members$`,
  `${CLIENT}/${V}/rooms/.*/context/.*$`,
  `${CLIENT}/${V}/rooms/.*/members$`,
  `${CLIENT}/${V}/rooms/.*/state$`,
  `${CLIENT}/v1/rooms/.*/hierarchy$`,
  `${CLIENT}/(v1|unstable)/rooms/.*/relations/`,
  `${CLIENT}/v1/rooms/.*/threads$`,
  `${CLIENT}/unstable/im.nheko.summary/summary/.*$`,
  `${CLIENT}/v1/room_summary/.*$`,
  `${CLIENT}/${V3}/account/3pid$`,
  `${CLIENT}/${V3}/account/whoami$`,
  `${CLIENT}/${V3}/account/deactivate$`,
  `${CLIENT}/(r0|v3)/delete_devices$`,
  `${CLIENT}/${V}/devices(/|$)`,
  `${CLIENT}/versions$`,
  `${CLIENT}/${V}/voip/turnServer$`,
  `${CLIENT}/${V}/rooms/.*/event/`,
  `${CLIENT}/${V}/joined_rooms$`,
  `${CLIENT}/v1/rooms/.*/timestamp_to_event$`,
  `${CLIENT}/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases`,
  `${CLIENT}/${V}/search$`,
  `${CLIENT}/${V3}/user/.*/filter(/|$)`,
  `${CLIENT}/${V}/directory/room/.*$`,
  `${CLIENT}/${V3}/capabilities$`,
  `${CLIENT}/${V3}/notifications$`,
  // Admin API
  '^/_synapse/admin/v1/rooms/[^/]+$',
  // Encryption
  `${CLIENT}/${V3}/keys/query$`,
  `${CLIENT}/${V3}/keys/changes$`,
  `${CLIENT}/${V3}/keys/claim$`,
  `${CLIENT}/${V3}/room_keys/`,
  `${CLIENT}/${V3}/keys/upload`,
  `${CLIENT}/${V}/keys/device_signing/upload$`,
  `${CLIENT}/${V}/keys/signatures/upload$`,
  // Registration and login
  `${CLIENT}/${V}/login$`,
  `${CLIENT}/${V3}/register$`,
  `${CLIENT}/${V3}/register/available$`,
  `${CLIENT}/v1/register/m.login.registration_token/validity$`,
  `${CLIENT}/${V3}/password_policy$`,
  // MSC4140 delayed events
  `${CLIENT}/unstable/org.matrix.msc4140/delayed_events(/[^/]+(/restart)?)?$`,
]

const EVENT_SENDING_ROUTES = [
  `${CLIENT}/${V}/rooms/.*/redact`,
  `${CLIENT}/${V}/rooms/.*/send`,
  `${CLIENT}/${V}/rooms/.*/state/`,
  `${CLIENT}/${V}/rooms/.*/(join|invite|leave|ban|unban|kick)$`,
  `${CLIENT}/${V}/join/`,
  `${CLIENT}/${V}/knock/`,
  `${CLIENT}/${V}/profile/`,
]

const STREAM_ROUTES: Partial<Record<Stream, readonly string[]>> = {
  typing: [`${CLIENT}/${V}/rooms/.*/typing`],
  to_device: [`${CLIENT}/${V3}/sendToDevice/`],
  account_data: [`${CLIENT}/${V3}/.*/tags`, `${CLIENT}/${V3}/.*/account_data`],
  receipts: [`${CLIENT}/${V3}/rooms/.*/receipt`, `${CLIENT}/${V3}/rooms/.*/read_markers`],
  presence: [`${CLIENT}/${V}/presence/`],
  push_rules: [`${CLIENT}/${V}/pushrules/`],
  device_lists: [
    `${CLIENT}/(r0|v3)/delete_devices$`,
    `${CLIENT}/${V}/devices(/|$)`,
    `${CLIENT}/${V3}/keys/upload`,
    `${CLIENT}/${V}/keys/device_signing/upload$`,
    `${CLIENT}/${V}/keys/signatures/upload$`,
  ],
  // Registered only on media-capable workers (docs: the writer must be able to run the media repository).
  quarantined_media_changes: [
    '^/_synapse/admin/v1/quarantine_media/.*$',
    '^/_synapse/admin/v1/room/.*/media/quarantine$',
    '^/_synapse/admin/v1/user/.*/media/quarantine$',
    '^/_synapse/admin/v1/media/quarantine/.*$',
    '^/_synapse/admin/v1/media/unquarantine/.*$',
  ],
}

const MEDIA_ROUTES = [
  '^/_matrix/media/',
  '^/_matrix/client/v1/media/',
  '^/_matrix/federation/v1/media/',
  '^/_synapse/admin/v1/purge_media_cache$',
  '^/_synapse/admin/v1/room/.*/media.*$',
  '^/_synapse/admin/v1/user/.*/media.*$',
  '^/_synapse/admin/v1/media/.*$',
  '^/_synapse/admin/v1/quarantine_media/.*$',
  '^/_synapse/admin/v1/users/.*/media$',
]

const WITHOUT_QUARANTINE_STREAM: readonly Stream[] = STREAMS.filter((s) => s !== 'quarantined_media_changes')

/**
 * Newest first. 1.152.0 added the quarantined_media_changes stream (CHANGES.md, upgrade.md
 * "Upgrading to v1.152.0"); 1.135.0 the experimental thread_subscriptions stream (MSC4306, no
 * documented routes). Releases before 1.135 are outside what this tool installs for workers.
 */
export const ROUTE_TABLES: readonly RouteTable[] = [
  {
    since: '1.152.0',
    generic: {
      sync: SYNC_ROUTES,
      federation: FEDERATION_ROUTES,
      client: CLIENT_ROUTES,
      eventSending: EVENT_SENDING_ROUTES,
      userDirectory: [`${CLIENT}/${V3}/user_directory/search$`],
    },
    streams: STREAM_ROUTES,
    knownStreams: STREAMS,
    media: MEDIA_ROUTES,
  },
  {
    since: '1.135.0',
    generic: {
      sync: SYNC_ROUTES,
      federation: FEDERATION_ROUTES,
      client: CLIENT_ROUTES,
      eventSending: EVENT_SENDING_ROUTES,
      userDirectory: [`${CLIENT}/${V3}/user_directory/search$`],
    },
    streams: Object.fromEntries(Object.entries(STREAM_ROUTES).filter(([s]) => s !== 'quarantined_media_changes')),
    knownStreams: WITHOUT_QUARANTINE_STREAM,
    media: MEDIA_ROUTES.filter((r) => !r.includes('quarantine')).concat('^/_synapse/admin/v1/quarantine_media/.*$'),
  },
]

/** The routes of the given Synapse release; the newest table when the version is not pinned. */
export function routeTable(synapseVersion: string | undefined): RouteTable {
  if (synapseVersion === undefined) return ROUTE_TABLES[0]!
  return ROUTE_TABLES.find((t) => compareVersions(synapseVersion, t.since) >= 0) ?? ROUTE_TABLES[ROUTE_TABLES.length - 1]!
}
